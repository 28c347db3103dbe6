//! Dense u32 ids for values that many entries share, alive while something holds them.

use rustc_hash::FxHashMap;
use std::hash::Hash;

/// Dense u32 ids for values (processes, addresses) that many entries share, so that an entry
/// holds a 4-byte id instead of the value. An id lives while it has holders and is handed
/// out again after its last holder releases it.
#[derive(Debug)]
pub(crate) struct HeldIds<K> {
    ids: FxHashMap<K, u32>,
    /// Each id's value and how many holders it has.
    slots: Vec<(K, u32)>,
    /// Ids with no value, to hand out again.
    free: Vec<u32>,
}

impl<K> Default for HeldIds<K> {
    fn default() -> Self {
        HeldIds { ids: FxHashMap::default(), slots: Vec::new(), free: Vec::new() }
    }
}

impl<K: Hash + Eq + Copy> HeldIds<K> {
    /// The value's id; a fresh one, with no holder yet, if it had none. A fresh id stays
    /// until a holder has held and released it.
    pub(crate) fn id(&mut self, value: K) -> u32 {
        if let Some(&id) = self.ids.get(&value) {
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = (value, 0);
                id
            }
            None => {
                self.slots.push((value, 0));
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 distinct values held")
            }
        };
        self.ids.insert(value, id);
        id
    }

    /// The value of a live id.
    pub(crate) fn value(&self, id: u32) -> K {
        self.slots[id as usize].0
    }

    /// One more holder of `id`.
    pub(crate) fn hold(&mut self, id: u32) {
        self.slots[id as usize].1 += 1;
    }

    /// One holder fewer of `id`; the id is freed with its last holder.
    pub(crate) fn release(&mut self, id: u32) {
        let (value, holders) = &mut self.slots[id as usize];
        debug_assert!(*holders > 0, "released an id nobody holds");
        *holders -= 1;
        if *holders == 0 {
            self.ids.remove(value);
            self.free.push(id);
        }
    }

    /// Values with an id.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_lives_while_held_and_is_reused_after_its_last_holder() {
        let mut ids: HeldIds<u64> = HeldIds::default();
        let seven = ids.id(7);
        assert_eq!(ids.id(7), seven, "a second look-up gives the same id");
        ids.hold(seven);
        ids.hold(seven);
        let eight = ids.id(8);
        ids.hold(eight);
        assert_ne!(seven, eight);
        ids.release(seven);
        assert_eq!(ids.value(seven), 7, "one holder left");
        assert_eq!(ids.id(7), seven);
        ids.release(seven);
        assert_eq!(ids.len(), 1, "7 freed with its last holder");
        let nine = ids.id(9);
        assert_eq!(nine, seven, "the freed id is handed out again");
        assert_eq!((ids.value(nine), ids.value(eight)), (9, 8));
    }
}
