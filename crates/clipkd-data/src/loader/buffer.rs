//! A batch image buffer that worker threads write into, one slot each, without locks.

use std::ptr::NonNull;

/// `slots` images of `slot_len` values in one allocation (the future `Batch::images`), shared
/// between the coordinator and the workers.
///
/// Soundness rests on one rule, kept by the coordinator: a slot is written by at most one
/// party at a time — the worker whose job targets it, until that worker reports back over a
/// channel (which orders its writes before the coordinator's reads), and afterwards only the
/// coordinator. Slots are disjoint, so concurrent writers of different slots never alias.
/// No reference to the whole buffer exists while it is shared; [`into_vec`](Self::into_vec)
/// needs sole ownership.
pub(crate) struct SharedImages {
    ptr: NonNull<f32>,
    len: usize,
    cap: usize,
    slot_len: usize,
}

// SAFETY: the buffer is plain `f32` data; access to slots follows the rule in the type's
// documentation, and ownership of the allocation is unique (freed once, in `Drop` or
// `into_vec`).
unsafe impl Send for SharedImages {}
// SAFETY: as above; `&SharedImages` only hands out raw pointers to slots.
unsafe impl Sync for SharedImages {}

impl SharedImages {
    /// A zeroed buffer of `slots * slot_len` values.
    pub(crate) fn new(slots: usize, slot_len: usize) -> Self {
        let v = vec![0.0f32; slots * slot_len];
        let mut v = std::mem::ManuallyDrop::new(v);
        SharedImages {
            // A `Vec`'s pointer is never null (dangling but non-null when empty).
            ptr: NonNull::new(v.as_mut_ptr()).expect("Vec pointers are non-null"),
            len: v.len(),
            cap: v.capacity(),
            slot_len,
        }
    }

    /// Values per slot.
    pub(crate) fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// Number of slots.
    pub(crate) fn slots(&self) -> usize {
        self.len / self.slot_len.max(1)
    }

    /// The first value of slot `i`.
    ///
    /// # Panics
    /// If `i` is not a slot.
    pub(crate) fn slot_ptr(&self, i: usize) -> *mut f32 {
        assert!(i < self.slots(), "slot {i} of {}", self.slots());
        // SAFETY: `i * slot_len + slot_len <= len`, inside the allocation.
        unsafe { self.ptr.as_ptr().add(i * self.slot_len) }
    }

    /// Runs `f` on slot `i` as a mutable slice.
    ///
    /// # Safety
    /// Nobody else may access slot `i` while `f` runs (see the type's documentation).
    pub(crate) unsafe fn with_slot<R>(&self, i: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
        // SAFETY: in bounds (checked by `slot_ptr`); exclusivity is the caller's contract.
        let slot = unsafe { std::slice::from_raw_parts_mut(self.slot_ptr(i), self.slot_len) };
        f(slot)
    }

    /// Copies slot `from` of `src` into slot `to` of `self`.
    ///
    /// # Safety
    /// Nobody else may be accessing either slot, and they must not be the same slot.
    pub(crate) unsafe fn copy_slot_from(&self, to: usize, src: &SharedImages, from: usize) {
        assert_eq!(self.slot_len, src.slot_len, "slot sizes differ");
        let (d, s) = (self.slot_ptr(to), src.slot_ptr(from));
        assert!(d != s, "copy of a slot onto itself");
        // SAFETY: both ranges are in bounds; distinct slots of `slot_len` values do not
        // overlap; exclusivity is the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(s, d, self.slot_len) };
    }

    /// Copies `data` (one image) into slot `to`.
    ///
    /// # Safety
    /// Nobody else may be accessing the slot.
    pub(crate) unsafe fn write_slot(&self, to: usize, data: &[f32]) {
        // SAFETY: exclusivity is the caller's contract.
        unsafe { self.with_slot(to, |s| s.copy_from_slice(data)) };
    }

    /// The buffer as a `Vec`, keeping the first `slots` slots.
    pub(crate) fn into_vec(self, slots: usize) -> Vec<f32> {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: the parts come from a `Vec<f32>` that was not freed (the `ManuallyDrop`
        // keeps `Drop` from running), and `self` was owned, so nothing else uses it.
        let mut v = unsafe { Vec::from_raw_parts(me.ptr.as_ptr(), me.len, me.cap) };
        v.truncate(slots * me.slot_len);
        v
    }
}

impl Drop for SharedImages {
    fn drop(&mut self) {
        // SAFETY: the parts come from a `Vec<f32>` that has not been freed; this runs once.
        drop(unsafe { Vec::from_raw_parts(self.ptr.as_ptr(), self.len, self.cap) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn slots_are_written_from_threads_and_collected() {
        let buf = Arc::new(SharedImages::new(4, 3));
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let b = buf.clone();
                std::thread::spawn(move || {
                    // SAFETY: each thread owns a distinct slot.
                    unsafe { b.with_slot(i, |s| s.fill(i as f32)) };
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let other = SharedImages::new(1, 3);
        // SAFETY: single-threaded here.
        unsafe { other.write_slot(0, &[7.0, 8.0, 9.0]) };
        unsafe { buf.copy_slot_from(1, &other, 0) };
        let v = Arc::try_unwrap(buf).ok().unwrap().into_vec(3);
        assert_eq!(v, [0.0, 0.0, 0.0, 7.0, 8.0, 9.0, 2.0, 2.0, 2.0]);
    }
}
