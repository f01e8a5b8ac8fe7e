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

/// The hash tag of each of `shards` shards, in order: the smallest number whose slot lies in
/// that shard's part of the slot space (`keys::Keys::request_streams` makes the keys).
pub fn tags(shards: usize) -> impl Iterator<Item = u32> {
    (0..shards)
        .map(move |s| (0u32..).find(|t| part(slot(&t.to_string()), shards) == s).expect("every part has a number"))
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
        let six: Vec<u32> = tags(6).collect();
        assert_eq!(six.len(), 6);
        for (s, tag) in six.iter().enumerate() {
            assert_eq!(part(slot(&format!("greeter:req:{{{tag}}}:x")), 6), s, "{tag}");
        }
        let mut counts = [0; 6];
        for n in 0..6000 {
            counts[for_ref(&format!("r{n}"), 6)] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }
}
