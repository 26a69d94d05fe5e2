package fakewa

import (
	"bytes"
	"compress/zlib"
	"context"
	"fmt"
	"sort"
	"time"

	"go.mau.fi/whatsmeow"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waCommon"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/proto/waHistorySync"
	"go.mau.fi/whatsmeow/proto/waWeb"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"
)

// HistoryMessage is one message of a chat in a history sync.
type HistoryMessage struct {
	ID string // "" gets a new id
	// FromMe says the account itself wrote it (from any of its devices).
	FromMe bool
	// Sender is who wrote it in a group (as the group addresses members:
	// a LID in a LID group); a 1:1 chat's sender is the chat.
	Sender types.JID
	// Text is a plain text message, unless Message is set.
	Text    string
	Message *waE2E.Message
	// Time is when it was sent; zero spaces a chat's messages a minute
	// apart, the last one now.
	Time time.Time
	// PushName is the sender's push name as the phone saw it; "" takes
	// the name of the fake's account with that JID, if any.
	PushName string
}

// HistoryConversation builds a chat (a person by phone number or LID, or
// a group) as p's phone puts it in a history sync: a LID chat carries the
// person's phone number (pnJID) and a phone-number chat the LID (lidJID)
// when the fake knows the person; a group lists its members. msgs are in
// the order they were sent; the conversation lists them newest first, as
// WhatsApp does.
func (p *Phone) HistoryConversation(chat types.JID, name string, msgs ...HistoryMessage) *waHistorySync.Conversation {
	s := p.srv
	chat = chat.ToNonAD()
	conv := &waHistorySync.Conversation{ID: proto.String(chat.String())}
	s.mu.Lock()
	switch chat.Server {
	case types.HiddenUserServer:
		if o := s.phoneOf(chat); o != nil && !o.numberHidden.Load() {
			conv.PnJID = proto.String(o.PN.String())
		}
	case types.DefaultUserServer:
		if o := s.phoneOf(chat); o != nil {
			conv.LidJID = proto.String(o.LID.String())
		}
	case types.GroupServer:
		if g := s.groups[chat]; g != nil {
			if name == "" {
				name = g.Subject
			}
			for _, m := range g.members {
				rank := waHistorySync.GroupParticipant_REGULAR
				switch {
				case m == g.Creator:
					rank = waHistorySync.GroupParticipant_SUPERADMIN
				case g.admins[m]:
					rank = waHistorySync.GroupParticipant_ADMIN
				}
				conv.Participant = append(conv.Participant, &waHistorySync.GroupParticipant{
					UserJID: proto.String(s.addressOf(g, m).String()), Rank: rank.Enum()})
			}
		}
	}
	pushNames := make([]string, len(msgs))
	for i, m := range msgs {
		sender := m.Sender
		if chat.Server != types.GroupServer {
			sender = chat
		}
		if pushNames[i] = m.PushName; pushNames[i] == "" && !m.FromMe {
			if o := s.phoneOf(sender.ToNonAD()); o != nil {
				pushNames[i] = o.PushName
			}
		}
	}
	now := s.clock().Truncate(time.Second)
	s.mu.Unlock()
	if name != "" {
		conv.Name = proto.String(name)
	}
	for i := len(msgs) - 1; i >= 0; i-- {
		m := msgs[i]
		at := m.Time
		if at.IsZero() {
			at = now.Add(-time.Duration(len(msgs)-1-i) * time.Minute)
		}
		id := m.ID
		if id == "" {
			id = NewMessageID()
		}
		msg := m.Message
		if msg == nil {
			msg = &waE2E.Message{Conversation: proto.String(m.Text)}
		}
		key := &waCommon.MessageKey{RemoteJID: proto.String(chat.String()), FromMe: proto.Bool(m.FromMe), ID: proto.String(id)}
		if chat.Server == types.GroupServer && !m.FromMe {
			key.Participant = proto.String(m.Sender.ToNonAD().String())
		}
		wmi := &waWeb.WebMessageInfo{Key: key, Message: msg, MessageTimestamp: proto.Uint64(uint64(at.Unix()))}
		if pushNames[i] != "" {
			wmi.PushName = proto.String(pushNames[i])
		}
		conv.Messages = append(conv.Messages, &waHistorySync.HistorySyncMsg{Message: wmi})
		if uint64(at.Unix()) > conv.GetConversationTimestamp() {
			conv.ConversationTimestamp = proto.Uint64(uint64(at.Unix()))
			conv.LastMsgTimestamp = conv.ConversationTimestamp
		}
	}
	return conv
}

// NewHistorySync is a history sync of the given type carrying convs, with
// the phone-number-to-LID mappings of every person in them the fake
// knows (WhatsApp sends these so that LID chats can be matched to
// contacts).
func (p *Phone) NewHistorySync(typ waHistorySync.HistorySync_HistorySyncType, convs ...*waHistorySync.Conversation) *waHistorySync.HistorySync {
	s := p.srv
	seen := map[*Phone]bool{}
	var people []*Phone
	note := func(jid string) {
		j, err := types.ParseJID(jid)
		if err != nil || (j.Server != types.DefaultUserServer && j.Server != types.HiddenUserServer) {
			return
		}
		if o := s.phoneOf(j.ToNonAD()); o != nil && o != p && !seen[o] && !o.numberHidden.Load() {
			seen[o] = true
			people = append(people, o)
		}
	}
	s.mu.Lock()
	for _, c := range convs {
		note(c.GetID())
		for _, part := range c.GetParticipant() {
			note(part.GetUserJID())
		}
		for _, m := range c.GetMessages() {
			note(m.GetMessage().GetKey().GetParticipant())
		}
	}
	var mappings []*waHistorySync.PhoneNumberToLIDMapping
	for _, o := range people {
		mappings = append(mappings, &waHistorySync.PhoneNumberToLIDMapping{PnJID: proto.String(o.PN.String()), LidJID: proto.String(o.LID.String())})
	}
	s.mu.Unlock()
	sort.Slice(mappings, func(i, j int) bool { return mappings[i].GetPnJID() < mappings[j].GetPnJID() })
	return &waHistorySync.HistorySync{SyncType: typ.Enum(), Conversations: convs, PhoneNumberToLidMappings: mappings,
		ChunkOrder: proto.Uint32(1), Progress: proto.Uint32(100)}
}

// SendHistorySync sends hs to the phone's linked devices as a phone does:
// the proto, zlib-compressed, encrypted with the history media keys and
// stored on the media host, then a HISTORY_SYNC_NOTIFICATION peer message
// naming it. The client answers with a hist_sync receipt and downloads it.
func (p *Phone) SendHistorySync(ctx context.Context, hs *waHistorySync.HistorySync) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := p.sendHistoryLocked(ctx, hs, nil, nil)
	return err
}

// sendHistoryLocked is SendHistorySync to one device (all when to is
// nil); tamper, for tests, may change the stored file before the
// notification goes out. It returns the notification's message id; p.mu
// is held.
func (p *Phone) sendHistoryLocked(ctx context.Context, hs *waHistorySync.HistorySync, to *companion, tamper func(MediaInfo) MediaInfo) (string, error) {
	notif, err := p.srv.historyNotification(hs, tamper)
	if err != nil {
		return "", err
	}
	return p.sendPeerToLocked(ctx, historyMessage(notif), to)
}

// historyNotification stores hs on the media host and names it as a
// phone's notification does.
func (s *Server) historyNotification(hs *waHistorySync.HistorySync, tamper func(MediaInfo) MediaInfo) (*waE2E.HistorySyncNotification, error) {
	info, err := s.storeHistory(hs)
	if err != nil {
		return nil, err
	}
	if tamper != nil {
		info = tamper(info)
	}
	notif := &waE2E.HistorySyncNotification{
		FileSHA256: info.FileSHA256, FileLength: proto.Uint64(info.FileLength), MediaKey: info.MediaKey,
		FileEncSHA256: info.FileEncSHA256, DirectPath: proto.String(info.DirectPath),
		SyncType:   waE2E.HistorySyncType(hs.GetSyncType()).Enum(),
		ChunkOrder: proto.Uint32(hs.GetChunkOrder()), Progress: proto.Uint32(hs.GetProgress()),
	}
	if oldest := oldestMessage(hs); oldest > 0 {
		notif.OldestMsgInChunkTimestampSec = proto.Int64(oldest)
	}
	return notif, nil
}

func historyMessage(notif *waE2E.HistorySyncNotification) *waE2E.Message {
	return &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{
		Type: waE2E.ProtocolMessage_HISTORY_SYNC_NOTIFICATION.Enum(), HistorySyncNotification: notif}}
}

// storeHistory puts hs on the media host as a phone uploads it.
func (s *Server) storeHistory(hs *waHistorySync.HistorySync) (MediaInfo, error) {
	raw, err := proto.Marshal(hs)
	if err != nil {
		return MediaInfo{}, err
	}
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		return MediaInfo{}, err
	}
	return s.EncryptMedia(buf.Bytes(), whatsmeow.MediaHistory)
}

func oldestMessage(hs *waHistorySync.HistorySync) int64 {
	var oldest int64
	for _, c := range hs.GetConversations() {
		for _, m := range c.GetMessages() {
			if t := int64(m.GetMessage().GetMessageTimestamp()); t > 0 && (oldest == 0 || t < oldest) {
				oldest = t
			}
		}
	}
	return oldest
}

// sendPeerToLocked is SendPeer to one of the phone's devices (all when
// to is nil): what a phone sends one new device or answers one device's
// request goes to that device only; p.mu is held.
func (p *Phone) sendPeerToLocked(ctx context.Context, msg *waE2E.Message, to *companion) (string, error) {
	if to == nil {
		return p.sendPeerLocked(ctx, msg)
	}
	s := p.srv
	s.mu.Lock()
	gone := to.removed
	s.mu.Unlock()
	if gone {
		return "", fmt.Errorf("%v is no longer linked", to.JID())
	}
	plain, err := proto.Marshal(msg)
	if err != nil {
		return "", err
	}
	enc, err := p.encryptFor(ctx, to, plain, false)
	if err != nil {
		return "", err
	}
	id := NewMessageID()
	attrs := waBinary.Attrs{"id": id, "t": s.clock().Unix(), "type": "text", "category": "peer", "from": p.PN}
	s.mu.Lock()
	s.deliver(to, "message", waBinary.Node{Tag: "message", Attrs: attrs, Content: []waBinary.Node{enc}})
	s.mu.Unlock()
	return id, nil
}

func init() {
	activationHooks = append(activationHooks, greetNewDevice)
}

// greetNewDevice is the phone's part of linking, once the new device is
// first online: its app state key (when the account has app state), then
// HistoryOnLink. Later connections of the same device get nothing.
func greetNewDevice(s *Server, comp *companion) {
	p := comp.phone
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.greeted[comp.device] {
		return
	}
	if p.greeted == nil {
		p.greeted = map[uint16]bool{}
	}
	p.greeted[comp.device] = true
	ctx := context.Background()
	if p.appState.started() {
		if err := p.shareAppStateKeyLocked(ctx, comp); err != nil {
			s.logf("fakewa: %s could not share its app state key with %v: %v", p.PN.User, comp.JID(), err)
		}
	}
	for _, hs := range p.HistoryOnLink {
		if _, err := p.sendHistoryLocked(ctx, hs, comp, nil); err != nil {
			s.logf("fakewa: %s could not send %v history to %v: %v", p.PN.User, hs.GetSyncType(), comp.JID(), err)
		}
	}
}
