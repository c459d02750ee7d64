//! foca's packets in bincode, decoded with size limits.

use super::{MAX_GOSSIP_PACKET, NodeIdentity};
use crate::NodeError;
use bincode::{Decode, Encode};
use bytes::{Buf, BufMut};
use foca::{Header, Incarnation, Member, Message, State};

/// Bounds on decoding one membership item.
const CODEC: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_GOSSIP_PACKET>,
> = bincode::config::standard().with_limit::<MAX_GOSSIP_PACKET>();

/// foca's wire format in bincode, through mirror types (foca's own are not
/// bincode types).
#[derive(Clone, Copy, Debug, Default)]
pub struct WireCodec;

#[derive(Encode, Decode)]
enum WireMessage {
    Ping(u8),
    Ack(u8),
    PingReq { target: NodeIdentity, probe: u8 },
    IndirectPing { origin: NodeIdentity, probe: u8 },
    IndirectAck { target: NodeIdentity, probe: u8 },
    ForwardedAck { origin: NodeIdentity, probe: u8 },
    Announce,
    Feed,
    Gossip,
    Broadcast,
    TurnUndead,
}

#[derive(Encode, Decode)]
struct WireHeader {
    src: NodeIdentity,
    src_incarnation: Incarnation,
    dst: NodeIdentity,
    message: WireMessage,
}

#[derive(Encode, Decode)]
struct WireMember {
    id: NodeIdentity,
    incarnation: Incarnation,
    /// 0 alive, 1 suspect, 2 down.
    state: u8,
}

fn put(item: &impl Encode, mut buf: impl BufMut) -> Result<(), NodeError> {
    let bytes =
        bincode::encode_to_vec(item, CODEC).map_err(|e| NodeError::PeerBytes(e.to_string()))?;
    // foca requires that a full buffer is left untouched.
    if buf.remaining_mut() < bytes.len() {
        return Err(NodeError::PeerBytes("membership packet full".into()));
    }
    buf.put_slice(&bytes);
    Ok(())
}

fn take<T: Decode<()>>(mut buf: impl Buf) -> Result<T, NodeError> {
    let (item, used) = bincode::decode_from_slice(buf.chunk(), CODEC)
        .map_err(|e| NodeError::PeerBytes(e.to_string()))?;
    buf.advance(used);
    Ok(item)
}

impl foca::Codec<NodeIdentity> for WireCodec {
    type Error = NodeError;

    fn encode_header(
        &mut self,
        header: &Header<NodeIdentity>,
        buf: impl BufMut,
    ) -> Result<(), NodeError> {
        let message = match header.message {
            Message::Ping(p) => WireMessage::Ping(p),
            Message::Ack(p) => WireMessage::Ack(p),
            Message::PingReq {
                target,
                probe_number,
            } => WireMessage::PingReq {
                target,
                probe: probe_number,
            },
            Message::IndirectPing {
                origin,
                probe_number,
            } => WireMessage::IndirectPing {
                origin,
                probe: probe_number,
            },
            Message::IndirectAck {
                target,
                probe_number,
            } => WireMessage::IndirectAck {
                target,
                probe: probe_number,
            },
            Message::ForwardedAck {
                origin,
                probe_number,
            } => WireMessage::ForwardedAck {
                origin,
                probe: probe_number,
            },
            Message::Announce => WireMessage::Announce,
            Message::Feed => WireMessage::Feed,
            Message::Gossip => WireMessage::Gossip,
            Message::Broadcast => WireMessage::Broadcast,
            Message::TurnUndead => WireMessage::TurnUndead,
        };
        let wire = WireHeader {
            src: header.src,
            src_incarnation: header.src_incarnation,
            dst: header.dst,
            message,
        };
        put(&wire, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<NodeIdentity>, NodeError> {
        let wire: WireHeader = take(buf)?;
        let message = match wire.message {
            WireMessage::Ping(p) => Message::Ping(p),
            WireMessage::Ack(p) => Message::Ack(p),
            WireMessage::PingReq { target, probe } => Message::PingReq {
                target,
                probe_number: probe,
            },
            WireMessage::IndirectPing { origin, probe } => Message::IndirectPing {
                origin,
                probe_number: probe,
            },
            WireMessage::IndirectAck { target, probe } => Message::IndirectAck {
                target,
                probe_number: probe,
            },
            WireMessage::ForwardedAck { origin, probe } => Message::ForwardedAck {
                origin,
                probe_number: probe,
            },
            WireMessage::Announce => Message::Announce,
            WireMessage::Feed => Message::Feed,
            WireMessage::Gossip => Message::Gossip,
            WireMessage::Broadcast => Message::Broadcast,
            WireMessage::TurnUndead => Message::TurnUndead,
        };
        Ok(Header {
            src: wire.src,
            src_incarnation: wire.src_incarnation,
            dst: wire.dst,
            message,
        })
    }

    fn encode_member(
        &mut self,
        member: &Member<NodeIdentity>,
        buf: impl BufMut,
    ) -> Result<(), NodeError> {
        let state = match member.state() {
            State::Alive => 0,
            State::Suspect => 1,
            State::Down => 2,
        };
        let wire = WireMember {
            id: *member.id(),
            incarnation: member.incarnation(),
            state,
        };
        put(&wire, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<NodeIdentity>, NodeError> {
        let wire: WireMember = take(buf)?;
        let state = match wire.state {
            0 => State::Alive,
            1 => State::Suspect,
            2 => State::Down,
            _ => {
                return Err(NodeError::PeerBytes("bad member state".into()));
            }
        };
        Ok(Member::new(wire.id, wire.incarnation, state))
    }
}
