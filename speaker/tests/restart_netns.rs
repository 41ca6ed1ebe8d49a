//! Rolling restarts: every speaker stopped with SIGTERM and started again, one node after the
//! other, as a DaemonSet update does, while a client holds a long-lived TCP connection through
//! each address and opens new ones all along.
//!
//! Each node serves TCP on the addresses itself (they sit on its loopback, and the kernel is
//! told not to answer ARP for them: the speaker does), as kube-proxy would: a connection lives
//! on the node the client's neighbour entry points to, and breaks if the address moves.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const ADDRESSES: [&str; 6] = [
    "192.168.117.100",
    "192.168.117.101",
    "192.168.117.102",
    "192.168.117.103",
    "192.168.117.104",
    "192.168.117.105",
];
const PORT: u16 = 8080;

/// One lab at a time: restarts and failure detection run on tight timers.
static ONE_LAB: Mutex<()> = Mutex::new(());

/// Stops every thread it was handed when dropped, so a failing test leaves nothing running.
#[derive(Default)]
struct Threads {
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Threads {
    fn spawn(&mut self, f: impl FnOnce(Arc<AtomicBool>) + Send + 'static) {
        let stop = self.stop.clone();
        self.handles.push(std::thread::spawn(move || f(stop)));
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Makes every node serve TCP on the addresses: each accepted connection is told the node's
/// name, then echoed.
fn serve_on_every_node(lab: &Lab, threads: &mut Threads) {
    for node in NODES {
        let netns = lab.segment.host(node).unwrap();
        for setting in [
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
        ] {
            netns.run("sysctl", &["-qw", setting]).unwrap();
        }
        for ip in ADDRESSES {
            netns
                .ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"])
                .unwrap();
        }
        let name = netns.name.clone();
        threads.spawn(move |stop| {
            enter(&name);
            let listener = TcpListener::bind(("0.0.0.0", PORT)).unwrap();
            listener.set_nonblocking(true).unwrap();
            let mut connections = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let stop = stop.clone();
                        connections.push(std::thread::spawn(move || echo(stream, node, &stop)));
                    }
                    // The accept loop's pace while nothing connects.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for connection in connections {
                let _ = connection.join();
            }
        });
    }
}

fn echo(mut stream: TcpStream, node: &str, stop: &AtomicBool) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    if stream.write_all(format!("{node}\n").as_bytes()).is_err() {
        return;
    }
    let mut byte = [0u8; 1];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut byte) {
            Ok(0) => return,
            Ok(_) => {
                if stream.write_all(&byte).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Connects to `ip` and reads the name of the node that accepted.
fn connect(ip: &str) -> std::io::Result<(TcpStream, String)> {
    let addr = SocketAddr::new(ip.parse().unwrap(), PORT);
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new(stream.try_clone()?).read_line(&mut line)?;
    Ok((stream, line.trim().to_string()))
}

/// What the client saw.
#[derive(Default)]
struct Seen {
    /// Per address, the nodes that accepted its new connections, in order, repeats folded.
    servers: BTreeMap<String, Vec<String>>,
    new_connections: u64,
    failed_new_connections: Vec<String>,
    /// Per address: the node its long-lived connection is on, and whether it broke.
    long_lived: BTreeMap<String, (String, Option<String>)>,
    pings: u64,
}

/// Stops `node`'s speaker with SIGTERM, waits until the others see it gone (a DaemonSet's
/// pod replacement takes seconds), starts it again and waits until it answers for `owned`
/// addresses and is heard by all.
fn restart_with_sigterm(lab: &mut Lab, node: &'static str, owned: usize) {
    let log = lab.terminate(node);
    assert!(
        log.iter().any(|l| l.contains("stopping for a restart")),
        "{node}'s speaker marks its heartbeat as restarting: {log:#?}"
    );
    poll(&format!("the others see {node}'s speaker gone"), 30, || {
        NODES
            .iter()
            .filter(|n| **n != node)
            .all(|n| speaker_metric(lab, n, "ferrolb_speaker_peers_alive") == 2.0)
            .then_some(())
    });
    lab.start_speaker(node);
    poll(
        &format!("{node}'s new speaker answers for its {owned} addresses"),
        30,
        || {
            (speaker_metric(lab, node, "ferrolb_speaker_announced_addresses") == owned as f64)
                .then_some(())
        },
    );
    poll("every speaker hears the other two", 30, || {
        NODES
            .iter()
            .all(|n| speaker_metric(lab, n, "ferrolb_speaker_peers_alive") == 3.0)
            .then_some(())
    });
}

#[test]
fn a_rolling_sigterm_restart_moves_no_address_and_breaks_no_connection() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::start();
    for (i, ip) in ADDRESSES.iter().enumerate().skip(1) {
        lab.add_service(&format!("app-{i}"), &[ip]);
    }
    let owners: BTreeMap<&str, &str> = ADDRESSES
        .iter()
        .map(|ip| (*ip, owner_among(&NODES, ip)))
        .collect();
    for node in NODES {
        assert!(
            owners.values().any(|o| *o == node),
            "every node owns an address, so every restart is one of an owner: {owners:?}"
        );
    }
    for (ip, owner) in &owners {
        lab.wait_for_answer(ip, Some(owner), "the elected node answers");
    }
    let mut servers = Threads::default();
    serve_on_every_node(&lab, &mut servers);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut client = Threads::default();
    let client_netns = lab.client().name.clone();
    // One long-lived connection per address, pinged every 100 ms.
    for ip in ADDRESSES {
        let (seen, netns) = (seen.clone(), client_netns.clone());
        let ready = Arc::new(AtomicU64::new(0));
        let opened = ready.clone();
        client.spawn(move |stop| {
            enter(&netns);
            let (mut stream, node) = connect(ip).unwrap();
            seen.lock()
                .unwrap()
                .long_lived
                .insert(ip.to_string(), (node, None));
            opened.store(1, Ordering::SeqCst);
            let mut byte = [0u8; 1];
            while !stop.load(Ordering::Relaxed) {
                let pinged = stream
                    .write_all(b"x")
                    .and_then(|()| stream.read_exact(&mut byte));
                let mut seen = seen.lock().unwrap();
                seen.pings += 1;
                if let Err(e) = pinged {
                    if let Some(entry) = seen.long_lived.get_mut(ip) {
                        entry.1 = Some(e.to_string());
                    }
                    return;
                }
                drop(seen);
                // The ping's pace.
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        poll("the long-lived connection is open", 30, || {
            (ready.load(Ordering::SeqCst) == 1).then_some(())
        });
    }
    // New connections to every address, one after the other, all along.
    {
        let (seen, netns) = (seen.clone(), client_netns.clone());
        client.spawn(move |stop| {
            enter(&netns);
            while !stop.load(Ordering::Relaxed) {
                for ip in ADDRESSES {
                    let result = connect(ip);
                    let mut seen = seen.lock().unwrap();
                    seen.new_connections += 1;
                    match result {
                        Ok((_, node)) => {
                            let servers = seen.servers.entry(ip.to_string()).or_default();
                            if servers.last() != Some(&node) {
                                servers.push(node);
                            }
                        }
                        Err(e) => seen.failed_new_connections.push(format!("{ip}: {e}")),
                    }
                }
            }
        });
    }

    for node in NODES {
        // myapp's IPv6 address counts too.
        let owned = owners.values().filter(|o| **o == node).count()
            + usize::from(owner_among(&NODES, "2001:db8::100") == node);
        restart_with_sigterm(&mut lab, node, owned);
    }
    // A last round of pings and connections after the last restart.
    let pings_before = seen.lock().unwrap().pings;
    poll(
        "the connections carry on after the last restart",
        30,
        || (seen.lock().unwrap().pings >= pings_before + 6 * 5).then_some(()),
    );
    client.stop();
    servers.stop();

    let seen = seen.lock().unwrap();
    eprintln!(
        "{} new connections, {} failed; {} pings over {} long-lived connections; servers per address: {:?}",
        seen.new_connections,
        seen.failed_new_connections.len(),
        seen.pings,
        seen.long_lived.len(),
        seen.servers
    );
    assert!(
        seen.failed_new_connections.is_empty(),
        "{:?}",
        seen.failed_new_connections
    );
    assert!(seen.new_connections > 100, "{}", seen.new_connections);
    for ip in ADDRESSES {
        let servers = &seen.servers[ip];
        assert!(servers.len() <= 2, "{ip} moved more than once: {servers:?}");
        assert_eq!(
            servers,
            &[owners[ip].to_string()],
            "{ip} stays with its owner through the owner's restart"
        );
        let (node, broken) = &seen.long_lived[ip];
        assert_eq!(node, owners[ip]);
        assert_eq!(
            broken, &None,
            "the long-lived connection through {ip} broke"
        );
    }
    // The hold is visible in the peers' logs, not only in its effect.
    assert!(
        lab.speaker_log(NODES[2])
            .iter()
            .any(|l| l.contains("back from a restart within its grace")),
        "the restarted speaker takes its addresses back"
    );
}

fn others(node: &str) -> Vec<&'static str> {
    NODES.iter().copied().filter(|n| *n != node).collect()
}

/// A speaker stopped for a restart that does not come back within its grace: the peers hold
/// its address (nobody answers, nobody moves it) for the grace, then take it over.
#[test]
fn a_speaker_that_does_not_come_back_within_its_grace_is_taken_over() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::start();
    let ip = ADDRESSES[0];
    let owner = owner_among(&NODES, ip);
    lab.wait_for_answer(ip, Some(owner), "the elected node answers");
    let log = lab.terminate(owner);
    assert!(
        log.iter().any(|l| l.contains("stopping for a restart")),
        "{log:#?}"
    );
    poll("the others see the owner's speaker gone", 30, || {
        others(owner)
            .iter()
            .all(|n| speaker_metric(&lab, n, "ferrolb_speaker_peers_alive") == 2.0)
            .then_some(())
    });
    // Well inside the 10 s grace.
    assert!(
        lab.arp_answers(ip).is_empty(),
        "the address is held for the restarting speaker"
    );
    assert_eq!(
        status_nodes(&lab.runtime, &lab.admin),
        ["node-1", "node-2", "node-3"]
            .iter()
            .filter(|n| **n == owner || **n == owner_among(&NODES, "2001:db8::100"))
            .map(|n| n.to_string())
            .collect(),
        "its ServiceL2Status stays while it is held"
    );
    let successor = owner_among(&others(owner), ip);
    lab.wait_for_answer(
        ip,
        Some(successor),
        "the grace ends: the successor takes over",
    );
}

/// On a cordoned node (drained for maintenance) SIGTERM hands the addresses over at once.
#[test]
fn a_cordoned_nodes_speaker_hands_over_at_once_on_sigterm() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::start();
    let ip = ADDRESSES[0];
    let owner = owner_among(&NODES, ip);
    lab.wait_for_answer(ip, Some(owner), "the elected node answers");
    lab.patch(
        kube::Api::<k8s_openapi::api::core::v1::Node>::all(lab.admin.clone()),
        owner,
        serde_json::json!({"spec": {"unschedulable": true}}),
        false,
    );
    let log = lab.terminate(owner);
    assert!(
        log.iter()
            .any(|l| l.contains("leaving the gossip cluster so peers take over now")),
        "{log:#?}"
    );
    let successor = owner_among(&others(owner), ip);
    // Without the cordon the address would be held for 10 s: 5 s tells the two apart.
    poll("the successor answers at once", 5, || {
        (lab.arp_answers(ip) == [lab.mac_of(successor)]).then_some(())
    });
}

/// A speaker started while its node cannot reach the API server waits for it instead of
/// exiting (found by the fault run: it crash-looped).
#[test]
fn a_speaker_started_without_the_api_server_waits_for_it() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::start();
    let node = "node-3";
    lab.kill(node);
    let netns = lab.segment.host(node).unwrap();
    netns.ip(&["link", "set", "eth0", "down"]).unwrap();
    lab.start_speaker(node);
    poll("the speaker says it waits for its Node", 30, || {
        lab.speaker_log(node)
            .iter()
            .any(|l| l.contains("cannot read this node's Node object yet"))
            .then_some(())
    });
    let netns = lab.segment.host(node).unwrap();
    netns.ip(&["link", "set", "eth0", "up"]).unwrap();
    poll("the speaker joins the others", 30, || {
        (speaker_metric(&lab, node, "ferrolb_speaker_peers_alive") == 3.0).then_some(())
    });
    let index = NODES.iter().position(|n| *n == node).unwrap();
    let speaker = lab.speakers[index].as_mut().unwrap();
    assert!(
        speaker.child.try_wait().unwrap().is_none(),
        "it is still running"
    );
}
