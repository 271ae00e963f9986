//! Payload masking (RFC 6455 section 5.3), in place.

/// Unmasks (or masks: the operation is its own inverse) `buf` whose first byte sits at
/// position `offset` of the frame payload. Works a word at a time; the compiler vectorises the
/// inner loop, so no unsafe is needed to be fast.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let rot = offset % 4;
    let key = [
        mask[rot],
        mask[(rot + 1) % 4],
        mask[(rot + 2) % 4],
        mask[(rot + 3) % 4],
    ];
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(b) ^ word).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// The plain byte-at-a-time definition, kept as the reference the fast path is checked against.
pub fn apply_mask_reference(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= mask[(offset + i) % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_matches_reference_at_every_offset_and_length() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for offset in 0..4 {
            for start in 0..8 {
                for len in 0..(data.len() - start) {
                    let mut a = data[start..start + len].to_vec();
                    let mut b = a.clone();
                    apply_mask(&mut a, mask, offset);
                    apply_mask_reference(&mut b, mask, offset);
                    assert_eq!(a, b, "offset {offset} start {start} len {len}");
                }
            }
        }
    }

    #[test]
    fn split_unmask_equals_whole() {
        let mask = [1, 2, 3, 4];
        let data: Vec<u8> = (0..100u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, mask, 0);
        for cut in 0..data.len() {
            let mut parts = data.clone();
            let (a, b) = parts.split_at_mut(cut);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, cut);
            assert_eq!(parts, whole);
        }
    }
}
