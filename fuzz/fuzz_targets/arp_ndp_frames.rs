//! Any bytes off the wire: the speaker's frame reader never panics, what it reads back is
//! consistent with what it would answer, and the kernel filter (run here by its model) passes
//! every frame whose question or claim is about an address the filter lists.
#![no_main]

use std::collections::BTreeSet;
use std::net::IpAddr;

use ferrolb_speaker::frame_filter::Program;
use ferrolb_speaker::packet::{self, Question};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    let heard = packet::read(frame);
    let parsed = packet::parse(frame);
    let _ = packet::read_announcement(frame);
    // `parse` is `read` restricted to questions.
    match (&heard, &parsed) {
        (Ok(heard), Ok(question)) => assert_eq!(heard.question.as_ref(), Some(question)),
        (Ok(heard), Err(_)) => assert!(heard.question.is_none()),
        (Err(a), Err(b)) => assert_eq!(a, b),
        (Err(_), Ok(_)) => panic!("parse accepted what read refused"),
    }
    // The filter listing exactly what the frame is about must pass it.
    if let Ok(heard) = &heard {
        let about: Vec<IpAddr> = heard
            .question
            .map(|q| q.target())
            .into_iter()
            .chain(heard.claim.map(|c| c.ip))
            .collect();
        let (mut v4, mut v6) = (BTreeSet::new(), BTreeSet::new());
        for ip in &about {
            match ip {
                IpAddr::V4(ip) => v4.insert(*ip),
                IpAddr::V6(ip) => v6.insert(*ip),
            };
        }
        if !about.is_empty() {
            assert!(Program::for_addresses(&v4, &v6).passes(frame), "{about:?}");
        }
    }
    // Answering whatever was asked builds a frame that reads back as a claim of the target.
    // (An ARP question for 0.0.0.0 is never answered: no pool holds it, and a reply from it
    // would claim nothing. Found by this target.)
    if let Ok(question) = parsed
        && !question.target().is_unspecified()
    {
        let mac = packet::MacAddr::new(2, 0, 0, 0, 0, 1);
        let answer = match question {
            Question::Arp { sender_mac, sender_ip, target } => {
                packet::arp_reply(mac, target, sender_mac, sender_ip)
            }
            Question::Neighbor { reply_mac, source_ip, target } => {
                packet::answer_solicitation(mac, reply_mac, source_ip, target)
            }
        };
        let claim = packet::read(&answer).ok().and_then(|h| h.claim);
        assert_eq!(claim.map(|c| (c.mac, c.ip)), Some((mac, question.target())));
    }
});
