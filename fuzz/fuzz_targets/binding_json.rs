//! A binding's JSON, as read from `natsfn-bindings`: parsed or refused with a reason;
//! an accepted one survives its own `to_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natsfn_protocol::BindingSpec;

fuzz_target!(|data: &[u8]| {
    match BindingSpec::parse("hello", data) {
        Ok(spec) => assert_eq!(BindingSpec::parse("hello", &spec.to_json()), Ok(spec)),
        Err(e) => assert!(!e.message.is_empty()),
    }
});
