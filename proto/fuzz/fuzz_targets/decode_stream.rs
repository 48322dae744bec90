//! Decoding as a reader does it, from a buffer that grows a byte at a
//! time: every prefix of a frame is "incomplete" (`Ok(None)`) until the
//! decoder has enough to answer, and from then on every longer buffer
//! gives the same answer as the whole input. A decoded frame is followed
//! by the next one, so a stream of frames is checked frame by frame.
#![no_main]

use std::fmt::Debug;

use lanspread_proto::{DecodeError, Request, Response};
use libfuzzer_sys::fuzz_target;

type Decoded<T> = Result<Option<(T, usize)>, DecodeError>;

fn check<T: PartialEq + Debug>(data: &[u8], decode: impl Fn(&[u8]) -> Decoded<T>) {
    let mut rest = data;
    loop {
        let whole = decode(rest);
        let mut answered = false;
        for cut in 0..=rest.len() {
            let partial = decode(&rest[..cut]);
            if answered || partial != Ok(None) {
                assert_eq!(partial, whole, "prefix of {cut} of {} bytes", rest.len());
                answered = true;
            }
        }
        match whole {
            Ok(Some((_, used))) => {
                assert!(
                    used > 0 && used <= rest.len(),
                    "used {used} of {}",
                    rest.len()
                );
                rest = &rest[used..];
            }
            _ => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, Request::decode);
    check(data, Response::decode);
});
