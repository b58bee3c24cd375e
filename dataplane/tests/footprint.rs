//! What every session keeps inline, whatever it uses.
//!
//! Each session boxes one `str0m::Rtc`. The patched str0m (third_party/README.md)
//! keeps the parts most sessions never use (BWE, the probe stream, the SCTP
//! endpoint, the DTLS event buffer) out of it; a str0m update that puts them
//! back inline costs every viewer kilobytes, and fails here.

#[test]
fn a_sessions_rtc_stays_under_five_kib() {
    let size = std::mem::size_of::<str0m::Rtc>();
    println!("size_of::<Rtc>() = {size} bytes");
    assert!(size <= 5 * 1024, "str0m::Rtc is {size} bytes inline");
}
