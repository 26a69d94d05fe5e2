package fakewa

import (
	"context"
	"time"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/proto/waHistorySync"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"
)

// OnDemandRequest is a linked device asking the phone for older messages
// of a chat (whatsmeow's BuildHistorySyncRequest).
type OnDemandRequest struct {
	// ID is the request's message id, which the answer's notification
	// names as its PeerDataRequestSessionID.
	ID           string
	Chat         types.JID // as the request named it
	OldestID     string
	OldestFromMe bool
	OldestTime   time.Time
	Count        int
	From         types.JID // the device that asked
	// Answered is how many messages the phone sent back.
	Answered int
	// Refused says the phone ignored it: not a peer message from one of
	// its own devices, or no count.
	Refused bool
}

// SetArchive sets the messages of a chat (a person by phone number or
// LID, or a group) the phone has, in the order they were sent, which it
// answers on-demand history requests from; it replaces what it had for
// that chat. Empty ids get a new one and zero times are spaced as
// HistoryConversation spaces them, once, so requests can name them.
func (p *Phone) SetArchive(chat types.JID, msgs ...HistoryMessage) {
	s := p.srv
	chat = chat.ToNonAD()
	s.mu.Lock()
	alt := s.otherForm(chat)
	now := s.clock().Truncate(time.Second)
	s.mu.Unlock()
	stored := make([]HistoryMessage, len(msgs))
	for i, m := range msgs {
		if m.ID == "" {
			m.ID = NewMessageID()
		}
		if m.Time.IsZero() {
			m.Time = now.Add(-time.Duration(len(msgs)-1-i) * time.Minute)
		}
		stored[i] = m
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.archive == nil {
		p.archive = map[types.JID][]HistoryMessage{}
	}
	delete(p.archive, alt) // the same person under the other form
	p.archive[chat] = stored
}

// Archive is what SetArchive stored for a chat (either form of a
// person), with the ids and times it gave: a test sends the newest of
// them as the link-time history and asks for the rest.
func (p *Phone) Archive(chat types.JID) []HistoryMessage {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]HistoryMessage(nil), p.archivedLocked(chat.ToNonAD())...)
}

// OnDemandRequests is every on-demand history request the phone got, in
// order, answered or not.
func (p *Phone) OnDemandRequests() []OnDemandRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]OnDemandRequest(nil), p.onDemand...)
}

// otherForm is a person's LID for their phone number and the reverse,
// when the fake knows them; s.mu is held.
func (s *Server) otherForm(j types.JID) types.JID {
	o := s.phoneOf(j)
	switch {
	case o == nil:
		return types.EmptyJID
	case j.Server == types.HiddenUserServer:
		return o.PN
	}
	return o.LID
}

// archivedLocked is a chat's archive under either form; p.mu is held.
func (p *Phone) archivedLocked(chat types.JID) []HistoryMessage {
	if msgs, ok := p.archive[chat]; ok {
		return msgs
	}
	p.srv.mu.Lock()
	alt := p.srv.otherForm(chat)
	p.srv.mu.Unlock()
	return p.archive[alt]
}

func init() {
	protocolMessageHandlers = append(protocolMessageHandlers, answerHistoryRequest)
}

// answerHistoryRequest is the phone answering a device's on-demand
// history request: up to the count asked for of the chat's archived
// messages just before the oldest the device has, as an ON_DEMAND
// history sync to that device only. It names the request's message id
// as the session, which is how a client tells answers apart.
func answerHistoryRequest(p *Phone, ctx context.Context, from *companion, id string, msg *waE2E.Message, peer bool) {
	pm := msg.GetProtocolMessage()
	op := pm.GetPeerDataOperationRequestMessage()
	if pm.GetType() != waE2E.ProtocolMessage_PEER_DATA_OPERATION_REQUEST_MESSAGE ||
		op.GetPeerDataOperationRequestType() != waE2E.PeerDataOperationRequestType_HISTORY_SYNC_ON_DEMAND {
		return
	}
	for _, seen := range p.onDemand {
		if seen.ID == id && seen.From == from.JID() {
			// whatsmeow addresses a message to itself to the phone twice
			// (as the chat and as its own account): one request.
			return
		}
	}
	req := op.GetHistorySyncOnDemandRequest()
	r := OnDemandRequest{ID: id, OldestID: req.GetOldestMsgID(), OldestFromMe: req.GetOldestMsgFromMe(),
		Count: int(req.GetOnDemandMsgCount()), From: from.JID()}
	if req.OldestMsgTimestampMS != nil {
		r.OldestTime = time.UnixMilli(req.GetOldestMsgTimestampMS())
	}
	chat, err := types.ParseJID(req.GetChatJID())
	if err == nil {
		r.Chat = chat.ToNonAD()
	}
	if !peer || err != nil || r.Chat.IsEmpty() || r.Count <= 0 {
		r.Refused = true
		p.onDemand = append(p.onDemand, r)
		p.srv.logf("fakewa: %s ignored a history request from %v (peer %v, chat %q, count %d)", p.PN.User, from.JID(), peer, req.GetChatJID(), r.Count)
		return
	}
	msgs := p.olderLocked(r)
	hs := p.NewHistorySync(waHistorySync.HistorySync_ON_DEMAND, p.HistoryConversation(r.Chat, "", msgs...))
	notif, err := p.srv.historyNotification(hs, nil)
	if err == nil {
		notif.PeerDataRequestSessionID = proto.String(id)
		_, err = p.sendPeerToLocked(context.WithoutCancel(ctx), historyMessage(notif), from)
	}
	if err != nil {
		p.srv.logf("fakewa: %s could not answer %v's history request: %v", p.PN.User, from.JID(), err)
	} else {
		r.Answered = len(msgs)
	}
	p.onDemand = append(p.onDemand, r)
}

// olderLocked is what r asks for: the last r.Count archived messages
// before the one it names (found by key, else by time); p.mu is held.
func (p *Phone) olderLocked(r OnDemandRequest) []HistoryMessage {
	all := p.archivedLocked(r.Chat)
	var older []HistoryMessage
	for i, m := range all {
		if m.ID == r.OldestID && m.FromMe == r.OldestFromMe {
			older = all[:i]
			break
		}
		if m.Time.UnixMilli() < r.OldestTime.UnixMilli() {
			older = append(older, m)
		}
	}
	if len(older) > r.Count {
		older = older[len(older)-r.Count:]
	}
	return append([]HistoryMessage(nil), older...)
}
