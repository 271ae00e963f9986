//! Differential check of the word-at-a-time `apply_mask` against the byte-at-a-time
//! `apply_mask_reference`, for any data, mask, payload offset and memory alignment.
//!
//! Input layout: 4 mask bytes, 8 offset bytes (big endian, top bit cleared: a payload position
//! is below 2^63), 1 byte choosing the slice's alignment and a split point, then the data.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrelay::ws::mask::{apply_mask, apply_mask_reference};

fuzz_target!(|input: &[u8]| {
    if input.len() < 13 {
        return;
    }
    let mask = [input[0], input[1], input[2], input[3]];
    let mut off = [0u8; 8];
    off.copy_from_slice(&input[4..12]);
    let offset = (u64::from_be_bytes(off) & (u64::MAX >> 1)) as usize;
    let knobs = input[12];
    let data = &input[13..];

    // Place the data at a chosen misalignment so the 8-byte chunks straddle words.
    let shift = (knobs & 7) as usize;
    let mut fast = vec![0u8; shift + data.len()];
    fast[shift..].copy_from_slice(data);
    let fast = &mut fast[shift..];
    let mut slow = data.to_vec();

    apply_mask(fast, mask, offset);
    apply_mask_reference(&mut slow, mask, offset);
    assert_eq!(
        &fast[..],
        &slow[..],
        "apply_mask differs from the reference (offset {offset})"
    );

    // Masking is its own inverse.
    apply_mask(fast, mask, offset);
    assert_eq!(&fast[..], data, "masking twice is not the identity");

    // Unmasking in two pieces (as a frame split across reads is) equals unmasking it whole.
    let cut = if data.is_empty() {
        0
    } else {
        (knobs as usize >> 3) * data.len() / 31
    };
    let cut = cut.min(data.len());
    let mut split = data.to_vec();
    let (a, b) = split.split_at_mut(cut);
    apply_mask(a, mask, offset);
    apply_mask(b, mask, offset + cut);
    assert_eq!(split, slow, "split unmask differs at cut {cut}");
});
