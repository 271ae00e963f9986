//! `Utf8Validator` fed a message in arbitrary pieces must agree with `std::str::from_utf8` on
//! the whole, and must fail fast: on exactly the piece holding the first byte that makes the
//! message invalid whatever follows, not before and not later.
//!
//! Input layout: 1 byte giving the number of cuts (0..=15), then 2 bytes per cut (a fraction of
//! the message length), then the message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringrelay::ws::Utf8Validator;

/// Length of the shortest prefix of `bytes` that is invalid whatever bytes follow, if any.
fn first_definite_error(bytes: &[u8]) -> Option<usize> {
    let e = std::str::from_utf8(bytes).err()?;
    e.error_len()?;
    // The bad sequence starts at `valid_up_to` and is shown bad within 4 bytes of it.
    let from = e.valid_up_to() + 1;
    (from..=bytes.len())
        .find(|&p| std::str::from_utf8(&bytes[..p]).is_err_and(|e| e.error_len().is_some()))
}

fuzz_target!(|input: &[u8]| {
    let Some((&n, rest)) = input.split_first() else {
        return;
    };
    let n = (n & 15) as usize;
    if rest.len() < 2 * n {
        return;
    }
    let (cut_bytes, data) = rest.split_at(2 * n);
    let mut cuts: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as usize * data.len() / 65535)
        .collect();
    cuts.sort_unstable();
    cuts.push(data.len());

    let whole_ok = std::str::from_utf8(data).is_ok();
    let definite = first_definite_error(data);

    let mut v = Utf8Validator::new();
    let mut last = 0;
    let mut failed_at: Option<usize> = None;
    for (k, &c) in cuts.iter().enumerate() {
        if v.feed(&data[last..c]).is_err() {
            failed_at = Some(k);
            break;
        }
        last = c;
    }
    let streamed_ok = failed_at.is_none() && v.finish().is_ok();
    assert_eq!(
        streamed_ok, whole_ok,
        "validator disagrees with std (cuts {cuts:?})"
    );

    // Fail fast: the first piece whose end reaches past the first definitely bad byte.
    let expected_piece = definite.map(|p| {
        cuts.iter()
            .position(|&c| c >= p)
            .expect("last cut is the length")
    });
    assert_eq!(
        failed_at, expected_piece,
        "failed on the wrong piece (cuts {cuts:?}, bad prefix {definite:?})"
    );
});
