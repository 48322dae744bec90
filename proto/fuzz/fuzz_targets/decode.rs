//! Any bytes must decode to a message, `None` or an error: never a panic,
//! never an allocation beyond the frame limits. A decoded message must
//! survive an encode/decode round trip unchanged.
#![no_main]

use lanspread_proto::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((request, _))) = Request::decode(data) {
        let again = request.encode();
        assert_eq!(Request::decode(&again).unwrap().unwrap().0, request);
    }
    if let Ok(Some((response, _))) = Response::decode(data) {
        let again = response.encode();
        assert_eq!(Response::decode(&again).unwrap().unwrap().0, response);
    }
});
