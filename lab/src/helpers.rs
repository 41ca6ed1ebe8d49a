//! Small processes the lab runs in its namespaces: a one-line HTTP server standing for a
//! Service's endpoint, and a TCP forwarder between the host and the lab's namespaces (through
//! 127.0.0.1 on the host, without touching the host's interfaces or routes).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use anyhow::Context;

/// Answers every HTTP request on `listen` with `text` (one thread per connection).
pub fn serve_text(listen: SocketAddr, text: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let body = format!("{text}\n");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else {
            continue;
        };
        let body = body.clone();
        std::thread::spawn(move || {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        });
    }
    Ok(())
}

/// Enters the network namespace `netns` (this thread only).
fn enter_netns(netns: &str) -> anyhow::Result<()> {
    let path = format!("/var/run/netns/{netns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {netns}"))
}

/// Accepts on `listen` and connects each client to `to`. `listen_netns` and `connect_netns`
/// name the network namespaces the listener and the outgoing connections live in (`None`:
/// this process's). The lab uses it both ways: kubectl on the host reaching the emulated API
/// server in `ferrolb-api`, and the namespaces reaching an existing cluster's API server that
/// only the host can reach.
pub fn forward(
    listen: SocketAddr,
    listen_netns: Option<&str>,
    to: SocketAddr,
    connect_netns: Option<&str>,
) -> anyhow::Result<()> {
    // A socket stays in the namespace it was created in; only the thread that creates the
    // listener enters `listen_netns`.
    let listener = match listen_netns {
        None => TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?,
        Some(netns) => {
            let netns = netns.to_string();
            std::thread::spawn(move || -> anyhow::Result<TcpListener> {
                enter_netns(&netns)?;
                TcpListener::bind(listen).with_context(|| format!("binding {listen} in {netns}"))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the listener thread panicked"))??
        }
    };
    for client in listener.incoming() {
        let Ok(client) = client else {
            continue;
        };
        let connect_netns = connect_netns.map(str::to_string);
        std::thread::spawn(move || {
            if let Some(netns) = &connect_netns
                && let Err(e) = enter_netns(netns)
            {
                eprintln!("forward: {e:#}");
                return;
            }
            let Ok(upstream) = TcpStream::connect(to) else {
                return;
            };
            let (Ok(mut client_read), Ok(mut upstream_write)) =
                (client.try_clone(), upstream.try_clone())
            else {
                return;
            };
            let (mut upstream_read, mut client_write) = (upstream, client);
            let up = std::thread::spawn(move || {
                let _ = std::io::copy(&mut client_read, &mut upstream_write);
                let _ = upstream_write.shutdown(std::net::Shutdown::Write);
            });
            let _ = std::io::copy(&mut upstream_read, &mut client_write);
            let _ = client_write.shutdown(std::net::Shutdown::Write);
            let _ = up.join();
        });
    }
    Ok(())
}
