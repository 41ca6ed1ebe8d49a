//! Which peers have shown that they hear this speaker, not only that this speaker hears them.
//!
//! SWIM counts a member alive as soon as any message from it arrives. On a one-way cut that is
//! wrong in a way that flaps: a speaker whose sends are dropped still receives the others'
//! periodic announcements to members they consider down, takes them for live peers, counts a
//! majority and announces its addresses again, until its own probes time out and it steps down
//! once more, every second. A peer counts here only once a message addressed to this speaker's
//! current identity has come from it (a ping, an ack, a feed, gossip, an announcement): the
//! identity is renewed on every start and every membership restart, so the peer can only know
//! it by having heard from this speaker, directly or through a member that did. Joining
//! announcements go to an address (a placeholder identity), and the others' announcements to
//! members they consider down go to the identity they remember: neither counts.
//!
//! The speaker that joins proves the peer that answers its announcement with a feed at once;
//! the peer would only prove it at the joiner's next message, up to a probe period later, and
//! in between would not count a speaker that counts it. So the joiner answers a first feed
//! with an announcement to the peer's exact identity (`MessageKind::Feed`).

use std::collections::BTreeSet;

/// What a received message asks of this speaker besides the protocol's own handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// The answer to this speaker's announcement.
    Feed,
    /// Anything else the membership protocol sends.
    Other,
}

/// What to do after a message proved two-way contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Nothing new.
    Known,
    /// The peer is newly proven.
    New,
    /// The peer is newly proven by its feed: announce to its exact identity, so that it
    /// proves this speaker as soon as this speaker proves it.
    NewAnswerIt,
}

/// The identities of the peers that have shown two-way contact with this speaker's current
/// identity.
#[derive(Debug, Clone)]
pub struct TwoWayContact<Id> {
    proven: BTreeSet<Id>,
}

impl<Id: Ord + Clone> Default for TwoWayContact<Id> {
    fn default() -> Self {
        TwoWayContact {
            proven: BTreeSet::new(),
        }
    }
}

impl<Id: Ord + Clone> TwoWayContact<Id> {
    /// Takes note of a message from `src` addressed to `dst`; `me` is this speaker's current
    /// identity.
    pub fn observe(&mut self, me: &Id, src: &Id, dst: &Id, kind: MessageKind) -> Proof {
        if dst != me || src == me || !self.proven.insert(src.clone()) {
            return Proof::Known;
        }
        match kind {
            MessageKind::Feed => Proof::NewAnswerIt,
            MessageKind::Other => Proof::New,
        }
    }

    pub fn is_proven(&self, peer: &Id) -> bool {
        self.proven.contains(peer)
    }

    /// A peer declared down (or renamed away) has to show contact again when it returns.
    pub fn forget(&mut self, peer: &Id) {
        self.proven.remove(peer);
    }

    /// This speaker's identity changed: nobody has heard the new one yet.
    pub fn forget_all(&mut self) {
        self.proven.clear();
    }

    /// Drops proofs of identities that are no longer members, so the set stays bounded.
    pub fn keep_only<'a>(&mut self, members: impl IntoIterator<Item = &'a Id>)
    where
        Id: 'a,
    {
        let members: BTreeSet<&Id> = members.into_iter().collect();
        self.proven.retain(|p| members.contains(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Id = (&'static str, u64);
    const ME: Id = ("node-1", 7);
    const PEER: Id = ("node-2", 3);

    #[test]
    fn a_message_to_the_current_identity_proves_contact() {
        let mut contact = TwoWayContact::default();
        assert_eq!(
            contact.observe(&ME, &PEER, &ME, MessageKind::Other),
            Proof::New
        );
        assert!(contact.is_proven(&PEER));
        assert_eq!(
            contact.observe(&ME, &PEER, &ME, MessageKind::Other),
            Proof::Known
        );
    }

    #[test]
    fn a_first_feed_is_answered_once() {
        let mut contact = TwoWayContact::default();
        assert_eq!(
            contact.observe(&ME, &PEER, &ME, MessageKind::Feed),
            Proof::NewAnswerIt
        );
        assert_eq!(
            contact.observe(&ME, &PEER, &ME, MessageKind::Feed),
            Proof::Known
        );
    }

    #[test]
    fn messages_to_an_old_or_placeholder_identity_prove_nothing() {
        let mut contact = TwoWayContact::default();
        let (old_me, placeholder): (Id, Id) = (("node-1", 6), ("", 0));
        assert_eq!(
            contact.observe(&ME, &PEER, &old_me, MessageKind::Other),
            Proof::Known
        );
        assert_eq!(
            contact.observe(&ME, &PEER, &placeholder, MessageKind::Other),
            Proof::Known
        );
        assert_eq!(
            contact.observe(&ME, &ME, &ME, MessageKind::Other),
            Proof::Known
        );
        assert!(!contact.is_proven(&PEER));
    }

    #[test]
    fn proofs_end_with_the_peer_or_with_this_identity() {
        let mut contact = TwoWayContact::default();
        let other: Id = ("node-3", 1);
        contact.observe(&ME, &PEER, &ME, MessageKind::Other);
        contact.observe(&ME, &other, &ME, MessageKind::Other);
        contact.forget(&PEER);
        assert!(!contact.is_proven(&PEER));
        assert!(contact.is_proven(&other));
        contact.keep_only([&PEER]);
        assert!(!contact.is_proven(&other));
        contact.observe(&ME, &PEER, &ME, MessageKind::Other);
        contact.forget_all();
        assert!(!contact.is_proven(&PEER));
    }

    #[test]
    fn a_restarted_peer_proves_contact_again() {
        let mut contact = TwoWayContact::default();
        let restarted: Id = ("node-2", 4);
        contact.observe(&ME, &PEER, &ME, MessageKind::Other);
        assert!(!contact.is_proven(&restarted));
    }
}
