//! Whether AF_XDP (`io = xdp`) can run here: the capabilities and kernel
//! support it needs, and with `io = xdp` configured, its interface and the
//! source address its packets carry.

use std::net::IpAddr;

use super::check::{Check, Level};

const NAME: &str = "af_xdp";

/// One line on AF_XDP: `capable` is the dataplane's capability check; with
/// `io = xdp`, `interface` must exist (`exists`) and `bind` must be one of
/// its addresses (`local`).
pub(super) fn check_xdp(
    capable: Result<(), String>,
    io: &str,
    interface: &str,
    exists: bool,
    bind: IpAddr,
    local: &[IpAddr],
) -> Check {
    let wanted = io == "xdp";
    if let Err(missing) = capable {
        let level = if wanted { Level::Fail } else { Level::Note };
        return Check::with(
            level,
            NAME,
            missing,
            "io = xdp refuses to start without it; under systemd install \
             systemd/sluice-xdp.conf as a drop-in (docs/xdp.md)",
        );
    }
    if !wanted {
        return Check::ok(
            NAME,
            "can run here (opt-in: io = \"xdp\" with xdp_interface; docs/xdp.md)",
        );
    }
    if !exists {
        return Check::with(
            Level::Fail,
            NAME,
            format!("xdp_interface {interface:?} does not exist"),
            "name the interface that carries the media traffic",
        );
    }
    if bind.is_unspecified() || !local.contains(&bind) {
        return Check::with(
            Level::Fail,
            NAME,
            format!("media_bind {bind} is not an address of this host"),
            "io = xdp writes media_bind as the source of every packet: set it to an address of xdp_interface",
        );
    }
    Check::ok(NAME, format!("io xdp on {interface}, source {bind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_rights_fail_only_when_xdp_is_configured() {
        let ip: IpAddr = "198.18.0.1".parse().unwrap();
        let no = || Err("AF_XDP unavailable, missing: CAP_BPF".to_string());
        assert_eq!(
            check_xdp(no(), "auto", "", false, ip, &[]).level,
            Level::Note
        );
        let c = check_xdp(no(), "xdp", "eth0", true, ip, &[ip]);
        assert_eq!(c.level, Level::Fail);
        assert!(c.to_string().contains("CAP_BPF"), "{c}");
        assert_eq!(
            check_xdp(Ok(()), "auto", "", false, ip, &[]).level,
            Level::Ok
        );
        assert_eq!(
            check_xdp(Ok(()), "xdp", "eth9", false, ip, &[ip]).level,
            Level::Fail
        );
        let unspecified: IpAddr = "0.0.0.0".parse().unwrap();
        let c = check_xdp(Ok(()), "xdp", "eth0", true, unspecified, &[ip]);
        assert!(c.to_string().contains("media_bind"), "{c}");
        assert_eq!(
            check_xdp(Ok(()), "xdp", "eth0", true, ip, &[ip]).level,
            Level::Ok
        );
    }
}
