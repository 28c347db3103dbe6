//! Sorting large records by a small key computed once per record.

/// Moves `items` into the order of `keys`, which the caller has sorted: `source(key)` is the
/// index in `items` of the item that belongs at that key's position. Each item moves along
/// its permutation cycle, as std's `sort_by_cached_key` does internally, so a comparison sort
/// touches only the keys. The keys' indexes are overwritten on the way.
pub(crate) fn permute_into_key_order<T, K>(items: &mut [T], keys: &mut [K], source: impl Fn(&mut K) -> &mut usize) {
    debug_assert_eq!(items.len(), keys.len());
    for position in 0..keys.len() {
        // Follow the cycle to where the item now at `position` was moved to.
        let mut index = *source(&mut keys[position]);
        while index < position {
            index = *source(&mut keys[index]);
        }
        *source(&mut keys[position]) = index;
        items.swap(position, index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    #[test]
    fn items_end_up_in_the_order_of_their_sorted_keys() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for len in [0usize, 1, 2, 3, 10, 1_000] {
            let mut items: Vec<String> = (0..len).map(|i| format!("item {i:04}")).collect();
            items.shuffle(&mut rng);
            let mut keys: Vec<(String, usize)> = items.iter().cloned().zip(0..).collect();
            keys.sort();
            permute_into_key_order(&mut items, &mut keys, |key| &mut key.1);
            let expected: Vec<String> = (0..len).map(|i| format!("item {i:04}")).collect();
            assert_eq!(items, expected, "{len} items");
        }
    }
}
