//! Net effect of a batch of row changes on one keyed table. Within a batch only the
//! final state of each key matters, so a run of changes collapses into at most one
//! set-based operation per key, whatever the order of tables in between.

use std::collections::HashMap;

use bytes::Bytes;

use crate::pgoutput::{Datum, Tuple};

/// Values of the apply key columns, as the stream sent them.
pub type Key = Vec<Option<Bytes>>;

#[derive(Clone, Debug, PartialEq)]
pub enum Net {
    /// Absent at the start of the batch and at its end: nothing to do.
    Absent,
    /// Absent at the start of the batch (strict mode only): a plain COPY.
    Insert(Tuple),
    /// A whole row that replaces whatever the key holds.
    Set(Tuple),
    /// A row with unchanged TOAST values: update only the columns that were sent.
    Patch(Tuple),
    Delete,
}

pub fn is_partial(t: &Tuple) -> bool {
    t.contains(&Datum::Unchanged)
}

/// Fills unchanged values of `new` from `prev`.
fn merged(mut new: Tuple, prev: &Tuple) -> Tuple {
    for (d, p) in new.iter_mut().zip(prev) {
        if *d == Datum::Unchanged {
            *d = p.clone();
        }
    }
    new
}

#[derive(Default)]
pub struct NetChanges {
    pub states: HashMap<Key, Net>,
    /// Idempotent mode while the target may hold rows newer than the stream position
    /// (after a resumed load): inserts become upserts.
    converge: bool,
}

impl NetChanges {
    pub fn new(converge: bool) -> NetChanges {
        NetChanges { states: HashMap::new(), converge }
    }

    pub fn insert(&mut self, key: Key, new: Tuple) {
        let next = match self.states.remove(&key) {
            None | Some(Net::Absent) if !self.converge => Net::Insert(new),
            _ => Net::Set(new),
        };
        self.states.insert(key, next);
    }

    pub fn delete(&mut self, key: Key) {
        let next = match self.states.remove(&key) {
            Some(Net::Insert(_) | Net::Absent) => Net::Absent,
            _ => Net::Delete,
        };
        self.states.insert(key, next);
    }

    /// Applies an update. When the key changes and the row carries unchanged values
    /// this batch cannot fill in, returns the row back: the caller must flush and
    /// move the row with a statement of its own.
    pub fn update(&mut self, old_key: Key, new_key: Key, new: Tuple) -> Result<(), Tuple> {
        if old_key == new_key {
            let next = match self.states.remove(&new_key) {
                Some(Net::Insert(p)) => Net::Insert(merged(new, &p)),
                Some(Net::Set(p)) => Net::Set(merged(new, &p)),
                Some(Net::Patch(p)) => Self::set_or_patch(merged(new, &p)),
                _ => Self::set_or_patch(new),
            };
            self.states.insert(new_key, next);
            return Ok(());
        }
        let new = match self.states.get(&old_key) {
            Some(Net::Insert(p) | Net::Set(p) | Net::Patch(p)) => merged(new, p),
            _ => new,
        };
        if is_partial(&new) {
            return Err(new);
        }
        self.delete(old_key);
        self.insert(new_key, new);
        Ok(())
    }

    fn set_or_patch(t: Tuple) -> Net {
        if is_partial(&t) {
            Net::Patch(t)
        } else {
            Net::Set(t)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(vals: &[&'static str]) -> Tuple {
        vals.iter().map(|v| if *v == "?" { Datum::Unchanged } else { Datum::Text(Bytes::from_static(v.as_bytes())) }).collect()
    }

    fn k(v: &'static str) -> Key {
        vec![Some(Bytes::from_static(v.as_bytes()))]
    }

    #[test]
    fn insert_update_delete_of_a_new_row_is_nothing() {
        let mut n = NetChanges::new(false);
        n.insert(k("1"), t(&["1", "a"]));
        n.update(k("1"), k("1"), t(&["1", "b"])).unwrap();
        assert_eq!(n.states[&k("1")], Net::Insert(t(&["1", "b"])));
        n.delete(k("1"));
        assert_eq!(n.states[&k("1")], Net::Absent);
    }

    #[test]
    fn unchanged_toast_values_are_filled_from_earlier_changes_or_left_to_the_target() {
        let mut n = NetChanges::new(false);
        n.update(k("1"), k("1"), t(&["1", "x", "?"])).unwrap();
        assert_eq!(n.states[&k("1")], Net::Patch(t(&["1", "x", "?"])));
        n.update(k("1"), k("1"), t(&["1", "?", "big"])).unwrap();
        assert_eq!(n.states[&k("1")], Net::Set(t(&["1", "x", "big"])));
        n.insert(k("2"), t(&["2", "a", "toast"]));
        n.update(k("2"), k("2"), t(&["2", "b", "?"])).unwrap();
        assert_eq!(n.states[&k("2")], Net::Insert(t(&["2", "b", "toast"])));
    }

    #[test]
    fn key_changes_delete_the_old_key_and_refuse_what_they_cannot_fill() {
        let mut n = NetChanges::new(false);
        n.update(k("1"), k("2"), t(&["2", "a"])).unwrap();
        assert_eq!(n.states[&k("1")], Net::Delete);
        assert_eq!(n.states[&k("2")], Net::Insert(t(&["2", "a"])));
        assert_eq!(n.update(k("3"), k("4"), t(&["4", "?"])), Err(t(&["4", "?"])));
    }

    #[test]
    fn converge_mode_turns_inserts_into_upserts() {
        let mut n = NetChanges::new(true);
        n.insert(k("1"), t(&["1", "a"]));
        assert_eq!(n.states[&k("1")], Net::Set(t(&["1", "a"])));
        n.delete(k("1"));
        n.insert(k("1"), t(&["1", "b"]));
        assert_eq!(n.states[&k("1")], Net::Set(t(&["1", "b"])));
    }
}
