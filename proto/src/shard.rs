//! Keys to shards (shared by the daemon and every client): `shard = fnv1a64(key) mod S`, stable across versions and machines.

/// The shard of `key` among `shards`.
pub fn shard_of(key: &[u8], shards: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let h = key.iter().fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME));
    (h % u64::from(shards.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        // Pinned values: changing the hash would move every key to another shard.
        assert_eq!(shard_of(b"a", 64), (0xaf63dc4c8601ec8c_u64 % 64) as u32);
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[shard_of(format!("key-{i}").as_bytes(), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }
}
