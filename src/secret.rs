//! The secret line (`worker-v0 <hex AES key>`): read once from stdin, held in memory that is
//! wiped when dropped, never printed, and the AES key in it.

use std::io::{Read, Write};

use anyhow::Context;
use deno_runtime::deno_io::StdioPipe;
use zeroize::Zeroizing;

/// The secret line.
pub type Secret = Zeroizing<String>;

/// One line from stdin, read once. `usage` says how the command is meant to be run.
pub fn read_line(usage: &str) -> anyhow::Result<Secret> {
    let mut input = Zeroizing::new(Vec::new());
    std::io::stdin().take(4096).read_to_end(&mut input).context("reading the secret line from stdin")?;
    let text = Zeroizing::new(
        String::from_utf8(std::mem::take(&mut *input))
            .map_err(|_| anyhow::anyhow!("the secret line on stdin is not UTF-8"))?,
    );
    let line = text.lines().next().unwrap_or_default().trim().to_string();
    if line.is_empty() {
        anyhow::bail!("no secret line on stdin: pipe it in, e.g. echo \"worker-v0 <hex key>\" | {usage}");
    }
    Ok(Secret::new(line))
}

/// A pipe holding the secret line, then end of input: a worker's stdin.
pub fn pipe(secret: &str) -> std::io::Result<StdioPipe> {
    let (reader, mut writer) = std::io::pipe()?;
    writer.write_all(Zeroizing::new(format!("{secret}\n")).as_bytes())?;
    drop(writer);
    Ok(StdioPipe::file(std::fs::File::from(std::os::fd::OwnedFd::from(reader))))
}

/// The AES key of a `worker-v0 <hex key>` line (16, 24 or 32 bytes).
pub fn key(line: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let hex = line
        .strip_prefix("worker-v0 ")
        .ok_or_else(|| anyhow::anyhow!("the secret line must read \"worker-v0 <hex key>\""))?;
    let key = Zeroizing::new(hex::decode(hex.trim()).map_err(|_| anyhow::anyhow!("the secret line's key is not hex"))?);
    if !matches!(key.len(), 16 | 24 | 32) {
        anyhow::bail!("the secret line's key must be 16, 24 or 32 bytes, not {}", key.len());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_of_a_line() {
        assert_eq!(
            &*key("worker-v0 00112233445566778899aabbccddeeff").unwrap(),
            &hex::decode("00112233445566778899aabbccddeeff").unwrap()
        );
        for bad in ["worker-v1 00", "worker-v0 zz", "worker-v0 0011"] {
            let e = key(bad).unwrap_err().to_string();
            assert!(!e.contains("0011") || e.contains("bytes"), "the key is not echoed: {e}");
        }
    }
}
