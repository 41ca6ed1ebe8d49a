//! Small processes the lab runs in its namespaces: a one-line HTTP server standing for a
//! Service's endpoint, and a TCP forwarder that lets kubectl on the host reach the API server
//! living in the lab's "api" namespace (through 127.0.0.1, without touching the host's
//! interfaces or routes).

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

/// Accepts on `listen` (in this process's namespace) and connects each client to `to` from
/// inside the network namespace `netns`.
pub fn forward(listen: SocketAddr, netns: &str, to: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let path = format!("/var/run/netns/{netns}");
    for client in listener.incoming() {
        let Ok(client) = client else {
            continue;
        };
        let path = path.clone();
        std::thread::spawn(move || {
            // Only this thread enters the namespace: the listener stays on the host side.
            let entered = std::fs::File::open(&path)
                .map_err(anyhow::Error::from)
                .and_then(|f| Ok(nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)?));
            if let Err(e) = entered {
                eprintln!("forward: cannot enter {path}: {e}");
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
