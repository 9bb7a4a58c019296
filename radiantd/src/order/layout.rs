//! Which shard table holds a key, once the shard count can change.
//!
//! With `shard = fnv1a64(key) mod S`, shard `s` of `S` is exactly shards `s` and `s + S` of
//! `2S`. A fracture (S -> 2S) therefore splits each of an order's tables in two on the same
//! order, and a consolidation (2S -> S) merges siblings the map has first put on one order:
//! both are one entry in each order's log (`Reshard`), applied to the order's own tables,
//! with no data crossing orders. The order remembers the modulus its tables are cut by; a
//! router still on the other count reaches the same order (siblings share it), and the order
//! finds the key's table from the key itself, so requests keep working through the change.

/// A table of this order and, when only part of it belongs to the shard asked for, the
/// `(count, shard)` its keys must hash to.
pub type Piece = (u32, Option<(u32, u32)>);

/// The table a key lives in: its shard under the order's modulus, or (an order that never
/// resharded) the shard the request names.
pub fn key_shard(key: &[u8], hint: u32, modulus: Option<u32>) -> u32 {
    match modulus {
        Some(m) => radiant_proto::shard_of(key, m),
        None => hint,
    }
}

/// The tables that make up shard `shard` of `of_total`, for an order whose tables are cut by
/// `modulus` (`None`: by `of_total`); `None` if the counts are not one step apart.
pub fn covering(shard: u32, of_total: u32, modulus: Option<u32>) -> Option<Vec<Piece>> {
    let m = modulus.unwrap_or(of_total);
    if of_total == 0 || of_total == m {
        Some(vec![(shard, None)])
    } else if m == of_total * 2 {
        Some(vec![(shard, None), (shard + of_total, None)])
    } else if of_total == m * 2 {
        Some(vec![(shard % m, Some((of_total, shard)))])
    } else {
        None
    }
}

/// Whether a key of a table belongs to the piece.
pub fn in_piece(key: &[u8], piece: &Piece) -> bool {
    piece.1.is_none_or(|(total, shard)| radiant_proto::shard_of(key, total) == shard)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key is in exactly one table before, during and after a fracture and back.
    #[test]
    fn every_key_has_one_table_under_either_count() {
        for i in 0..2_000u32 {
            let key = format!("key-{i}").into_bytes();
            let (s8, s16) = (radiant_proto::shard_of(&key, 8), radiant_proto::shard_of(&key, 16));
            assert_eq!(s16 % 8, s8, "a child's parent is its shard mod the old count");
            // An order cut by 16 asked for shard s8 of 8 looks in both children.
            let pieces = covering(s8, 8, Some(16)).unwrap();
            assert_eq!(pieces.iter().filter(|p| p.0 == s16 && in_piece(&key, p)).count(), 1);
            // An order cut by 8 asked for shard s16 of 16 looks in the parent, filtered.
            let pieces = covering(s16, 16, Some(8)).unwrap();
            assert_eq!(pieces, vec![(s8, Some((16, s16)))]);
            assert!(in_piece(&key, &pieces[0]));
            assert_eq!(key_shard(&key, 99, Some(16)), s16);
            assert_eq!(key_shard(&key, 5, None), 5);
        }
        assert_eq!(covering(3, 8, None), Some(vec![(3, None)]));
        assert_eq!(covering(3, 8, Some(32)), None, "two steps apart: refresh the map");
    }
}
