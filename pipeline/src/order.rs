//! Sorting and moving batches of large records (~100 bytes each) with as few copies of them
//! as possible.

use std::cmp::Ordering;

/// Below this many items the keys are compared instead: radix sort's passes over 256-bucket
/// histograms cost more than a comparison sort on short slices (radsort's documentation; the
/// threshold itself was not measured here).
const RADIX_FROM: usize = 64;

/// Sorts `items` by `key`, computed once per item, and where two keys are equal by `tie`
/// (which reads the items themselves: equal records, or a hash collision). The keys are
/// sorted on their own, with the item's index, and the items then moved into place along the
/// permutation's cycles, as std's `sort_by_cached_key` does internally: ordering the keys
/// touches no item unless two are equal. (std's version cannot be used: its key would have
/// to hold the tie-break's fields, that is, a copy of every item.) The keys are radix sorted
/// (`radsort`, which skips the bytes all keys share, such as a slice's one time): linear in
/// the items, where a comparison sort of hashes was ~18% of the job's time
/// (docs/BENCHMARKS.md, item 27). Not stable.
pub(crate) fn sort_by_key_then<T, K: radsort::Key + Ord>(
    items: &mut [T],
    key: impl Fn(&T) -> K,
    tie: impl Fn(&T, &T) -> Ordering,
) {
    let mut keys: Vec<(K, usize)> = items.iter().enumerate().map(|(index, item)| (key(item), index)).collect();
    if keys.len() < RADIX_FROM {
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| tie(&items[a.1], &items[b.1])));
    } else {
        radsort::sort_by_key(&mut keys, |(key, _)| *key);
        // Equal keys are adjacent now; order each run of them by the tie-break.
        for run in keys.chunk_by_mut(|a, b| a.0 == b.0) {
            if run.len() > 1 {
                run.sort_unstable_by(|a, b| tie(&items[a.1], &items[b.1]));
            }
        }
    }
    for position in 0..keys.len() {
        // Follow the cycle to where the item now at `position` was moved to.
        let mut index = keys[position].1;
        while index < position {
            index = keys[index].1;
        }
        keys[position].1 = index;
        items.swap(position, index);
    }
}

/// Moves `batch` to the end of `into`, leaving it empty. When `into` is empty, the two swap,
/// so the batch's records are not copied (docs/BENCHMARKS.md, item 28).
pub(crate) fn append_or_swap<T>(into: &mut Vec<T>, batch: &mut Vec<T>) {
    if into.is_empty() {
        std::mem::swap(into, batch);
    } else {
        into.append(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::seq::SliceRandom;
    use rand::SeedableRng;

    #[test]
    fn items_end_up_sorted_by_key_then_by_the_tie_break() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Both paths: below and above RADIX_FROM.
        for len in [0usize, 1, 2, 3, 10, RADIX_FROM - 1, RADIX_FROM, 1_000] {
            let mut items: Vec<String> = (0..len).map(|i| format!("item {i:04}")).collect();
            items.shuffle(&mut rng);
            // A key that collides often (the item's last digit), so the tie-break decides most.
            sort_by_key_then(&mut items, |item| item.as_bytes()[item.len() - 1], |a, b| a.cmp(b));
            let mut expected: Vec<String> = (0..len).map(|i| format!("item {i:04}")).collect();
            expected.sort_by_key(|item| (item.as_bytes()[item.len() - 1], item.clone()));
            assert_eq!(items, expected, "{len} items");
        }
    }

    #[test]
    fn append_or_swap_keeps_every_item_in_order() {
        let (mut into, mut batch) = (Vec::new(), vec![1, 2]);
        append_or_swap(&mut into, &mut batch);
        assert_eq!((into.as_slice(), batch.as_slice()), (&[1, 2][..], &[][..]));
        let mut batch = vec![3];
        append_or_swap(&mut into, &mut batch);
        assert_eq!((into.as_slice(), batch.as_slice()), (&[1, 2, 3][..], &[][..]));
    }
}
