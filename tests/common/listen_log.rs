//! The port a `ztbridge serve` child bound, read from its log.  Shared by
//! the tests' children (`child.rs`) and the benches' (`benches/common`,
//! which include this file with `#[path]`), so that the one log line both
//! parse is parsed in one place.

/// The port of the `listening for webhooks` line of a server's log
/// (text or JSON format: the address follows `127.0.0.1:`); `None` until
/// that line is written, or if it names port 0.
pub fn bound_port(log: &str) -> Option<u16> {
    let line = log.lines().find(|l| l.contains("listening for webhooks"))?;
    let after = &line[line.find("127.0.0.1:")? + "127.0.0.1:".len()..];
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|p| *p != 0)
}
