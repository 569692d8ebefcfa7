//! A package's tar.gz unpacked into a fresh directory under small limits: within
//! them, or refused; nothing written beside the directory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let outer = tempfile::tempdir().expect("tempdir");
    let dest = outer.path().join("pkg");
    std::fs::create_dir(&dest).expect("pkg");
    match natsfn_actors::fuzzing::unpack(data, &dest) {
        Ok((bytes, entries)) => assert!(bytes <= 256 * 1024 && entries <= 64),
        Err(why) => assert!(!why.is_empty()),
    }
    let beside = std::fs::read_dir(outer.path()).expect("outer").count();
    assert_eq!(beside, 1, "something was written beside the package");
});
