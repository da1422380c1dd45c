//! Loopback ports: choosing a free one and checking who listens on it.

use std::collections::HashSet;
use std::net::TcpListener;

/// How many ports handed out last are never handed out again, so engines
/// that start at the same time (a parallel campaign) get distinct ports.
const REMEMBERED: usize = 64;

/// Ports [`free_port`] handed out last.
static HANDED_OUT: std::sync::Mutex<std::collections::VecDeque<u16>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

/// A port that was free on 127.0.0.1 a moment ago and that this process has
/// not handed out recently (an engine started beside this one may not have
/// bound its own yet). The engine binds it next; the ownership check after
/// start-up catches the rare race with other programs.
pub fn free_port() -> std::io::Result<u16> {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // The kernel hands out ephemeral ports in turn, so a repeat is rare and
    // a few attempts always suffice.
    let mut port = 0;
    for _ in 0..REMEMBERED {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        port = listener.local_addr()?.port();
        if !handed.contains(&port) {
            break;
        }
    }
    if handed.len() == REMEMBERED {
        handed.pop_front();
    }
    handed.push_back(port);
    Ok(port)
}

/// Whether some process in `pids` holds the listening socket of `port`
/// (IPv4 or IPv6), read from /proc. `None` when /proc cannot tell.
pub fn port_owned_by(port: u16, pids: &[u32]) -> Option<bool> {
    let inodes = listening_inodes(port)?;
    if inodes.is_empty() {
        return Some(false);
    }
    let owned = pids.iter().any(|pid| {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
        fds.flatten().any(|fd| {
            let Ok(target) = std::fs::read_link(fd.path()) else { return false };
            let target = target.to_string_lossy();
            let inode = target.strip_prefix("socket:[").and_then(|rest| rest.strip_suffix(']'));
            inode.is_some_and(|inode| inodes.contains(inode))
        })
    });
    Some(owned)
}

/// Socket inodes listening on `port`.
fn listening_inodes(port: u16) -> Option<HashSet<String>> {
    let mut inodes = HashSet::new();
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        readable = true;
        inodes.extend(parse_listeners(&text, port));
    }
    readable.then_some(inodes)
}

/// Inodes of rows in a /proc/net/tcp table that LISTEN (state 0A) on `port`.
fn parse_listeners(table: &str, port: u16) -> Vec<String> {
    let wanted = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            let listening = *fields.get(3)? == "0A";
            (listening && local_port == wanted).then(|| fields.get(9).map(|s| (*s).to_owned()))?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_own_listener_and_not_a_strangers() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id();
        assert_eq!(port_owned_by(port, &[me]), Some(true));
        assert_eq!(port_owned_by(port, &[1]), Some(false));
        drop(listener);
        assert_eq!(port_owned_by(port, &[me]), Some(false));
    }

    #[test]
    fn parses_proc_net_tcp_rows() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1\n\
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 67890 1\n";
        assert_eq!(parse_listeners(table, 8080), ["12345"]);
        assert!(parse_listeners(table, 8081).is_empty());
    }
}
