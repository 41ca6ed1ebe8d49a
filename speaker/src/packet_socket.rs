//! A raw `AF_PACKET` socket on one interface, with a classic BPF filter the kernel runs before
//! a frame is copied to this process (`frame_filter`).
//!
//! pnet's datalink channel, used before, gives no access to its socket, so no filter could be
//! attached: every frame of the interface (all traffic, not only ARP and NDP) was copied to
//! the responder. This is the one module of the speaker that calls the C library directly; each
//! call's safety argument sits next to it.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::frame_filter::Instruction;

pub struct PacketSocket {
    fd: OwnedFd,
}

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

impl PacketSocket {
    /// Opens a socket that receives every frame `filter` passes on `interface` (and the
    /// multicast a Neighbor Solicitation is sent to), and sends whole Ethernet frames there.
    pub fn open(
        interface: &str,
        filter: &[Instruction],
        read_timeout: Duration,
    ) -> io::Result<PacketSocket> {
        let name = CString::new(interface)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with NUL"))?;
        // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        let ifindex = libc::c_int::try_from(index).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "interface index too large")
        })?;
        // Protocol 0: nothing is received until the socket is bound, after the filter is on, so
        // no unfiltered frame queues up in between.
        // SAFETY: plain system call with constant arguments; the result is checked.
        let raw = check(unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0)
        })?;
        // SAFETY: `raw` is a descriptor just returned by socket(2), owned by nobody else.
        let socket = PacketSocket {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        };
        socket.set_filter(filter)?;
        let timeout = libc::timeval {
            tv_sec: libc::time_t::try_from(read_timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(read_timeout.subsec_micros() as i32),
        };
        socket.set_option(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)?;
        // Solicitations go to solicited-node multicast groups this interface has not joined.
        // SAFETY: packet_mreq is plain old data; all-zero is a valid value.
        let mut membership: libc::packet_mreq = unsafe { std::mem::zeroed() };
        membership.mr_ifindex = ifindex;
        membership.mr_type = libc::PACKET_MR_ALLMULTI as libc::c_ushort;
        socket.set_option(libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &membership)?;
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as libc::c_ushort;
        address.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        address.sll_ifindex = ifindex;
        // SAFETY: `address` is a valid sockaddr_ll and the length passed is its size.
        check(unsafe {
            libc::bind(
                socket.fd.as_raw_fd(),
                std::ptr::from_ref(&address).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(socket)
    }

    fn set_option<T>(&self, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: `value` points to a live T and the length passed is its size; the kernel
        // copies it before returning.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                std::ptr::from_ref(value).cast::<libc::c_void>(),
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        })
        .map(drop)
    }

    /// Replaces the filter; the kernel swaps it atomically.
    pub fn set_filter(&self, program: &[Instruction]) -> io::Result<()> {
        let mut filter: Vec<libc::sock_filter> = program
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        let length = libc::c_ushort::try_from(filter.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "filter too long"))?;
        let program = libc::sock_fprog {
            len: length,
            filter: filter.as_mut_ptr(),
        };
        // The kernel copies the instructions during the call: `filter` outlives it.
        self.set_option(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &program)
    }

    /// Receives one frame into `buffer`; `TimedOut`/`WouldBlock` after the read timeout.
    pub fn recv(&self, buffer: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buffer` is valid for writes of its length for the duration of the call.
        let received = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buffer.as_mut_ptr().cast::<libc::c_void>(),
                buffer.len(),
                0,
            )
        };
        usize::try_from(received).map_err(|_| io::Error::last_os_error())
    }

    /// Sends one whole Ethernet frame on the interface the socket is bound to.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: `frame` is valid for reads of its length for the duration of the call.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast::<libc::c_void>(),
                frame.len(),
                0,
            )
        };
        usize::try_from(sent).map_err(|_| io::Error::last_os_error())
    }
}
