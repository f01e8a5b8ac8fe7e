//! Sharded request streams (`streamShards = N`): a type's requests spread over N streams
//! whose keys lie in different parts of Redis Cluster's slot space, so that each master of a
//! cluster serves a share.
//!
//! Shard `s` of `N` is `<type>:req:{t}:x`, where `t` is the smallest number whose hash slot
//! lies in the `s`-th of `N` equal parts of the 16384 slots (clusters made by `redis-cli
//! --cluster create` split the slots in equal ranges, so `N` a multiple of the masters gives
//! each the same number of shards). A request goes to the shard of its `ref`'s slot (the
//! same parts), so a client that knows CRC16 finds it without asking.

/// Redis Cluster's slot count.
const SLOTS: u32 = 16384;

/// A key's hash slot: CRC16 (XMODEM) of its hash tag (`{...}`) if it has one, else of itself.
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tag = bytes.iter().position(|b| *b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    (crc16::State::<crc16::XMODEM>::calculate(tag.unwrap_or(bytes)) as u32 % SLOTS) as u16
}

/// The part of the slot space (of `n`) that `slot` lies in.
fn part(slot: u16, n: usize) -> usize {
    (slot as usize * n) / SLOTS as usize
}

/// The request streams of a type with `shards` shards (0 or 1: the one stream `single`).
pub fn streams(worker_type: &str, shards: usize, single: &str) -> Vec<String> {
    if shards <= 1 {
        return vec![single.to_string()];
    }
    (0..shards)
        .map(|s| {
            let tag = (0u32..).find(|t| part(slot(&t.to_string()), shards) == s).expect("every part has a number");
            format!("{worker_type}:req:{{{tag}}}:x")
        })
        .collect()
}

/// The request streams a type's (or worker's) hash names: `streamShards` shards, or
/// `requestStream` (default `<type>:req:x`).
pub fn request_streams(
    worker_type: &str,
    hash: &std::collections::HashMap<String, String>,
) -> Result<Vec<String>, String> {
    let shards = match hash.get("streamShards").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => 1,
        Some(v) => v.parse::<usize>().ok().filter(|n| (1..=1024).contains(n)).ok_or_else(|| {
            format!("streamShards '{v}' is not a number from 1 to 1024; fix it with redis-cli hset {worker_type}:h streamShards ...")
        })?,
    };
    let single = hash.get("requestStream").filter(|v| !v.is_empty()).cloned();
    Ok(streams(worker_type, shards, &single.unwrap_or_else(|| format!("{worker_type}:req:x"))))
}

/// The shard a request with this `ref` goes to.
pub fn for_ref(reference: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    part(slot(reference), shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // CLUSTER KEYSLOT answers these.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("a{}b"), slot("a{}b"));
        assert_eq!(slot("{}"), 15257);
    }

    #[test]
    fn shards_spread_over_the_slot_space() {
        let six = streams("greeter", 6, "greeter:req:x");
        assert_eq!(six.len(), 6);
        for (s, stream) in six.iter().enumerate() {
            assert!(stream.starts_with("greeter:req:{") && stream.ends_with("}:x"), "{stream}");
            assert_eq!(part(slot(stream), 6), s, "{stream}");
        }
        assert_eq!(streams("greeter", 1, "in"), ["in"]);
        let mut counts = [0; 6];
        for n in 0..6000 {
            counts[for_ref(&format!("r{n}"), 6)] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }
}
