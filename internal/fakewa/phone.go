package fakewa

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/libsignal/groups"
	"go.mau.fi/libsignal/keys/identity"
	"go.mau.fi/libsignal/keys/prekey"
	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/session"
	"go.mau.fi/libsignal/util/optional"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/proto/waHistorySync"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
	"google.golang.org/protobuf/proto"
)

// Phone is a WhatsApp account's primary device, scripted by a test: it
// links companions, sends and receives messages, and answers what a
// phone answers (delivery receipts, retry receipts).
type Phone struct {
	srv      *Server
	PN, LID  types.JID
	PushName string
	// BusinessName, when set, is the verified business name WhatsApp puts
	// on the phone's 1:1 messages (verifiedname.go).
	BusinessName string
	// Platform is what pair-success says the phone runs.
	Platform string
	// NoMultidevice makes ScanQR answer as a WhatsApp too old for linked
	// devices.
	NoMultidevice bool
	// numberHidden: WhatsApp gives others this person's LID without the
	// phone number beside it (HideNumber).
	numberHidden atomic.Bool
	// lidUnpaired: WhatsApp sends this person's number-addressed 1:1
	// messages without the LID beside (WithoutLID).
	lidUnpaired atomic.Bool
	// addressing overrides the server's LIDAddressing for this phone's
	// 1:1 messages (AddressBy): 0 as the server, 1 by LID, 2 by number.
	addressing atomic.Int32

	identity *keys.KeyPair
	regID    uint32
	signed   *keys.PreKey
	store    *signalStore

	// Guarded by srv.mu.
	companions map[uint16]*companion
	nextDevice uint16
	oneTime    []uint32 // one-time prekeys not yet handed out

	mu sync.Mutex // one send or receive at a time: Signal state is sequential
	// answerRetries says whether the phone answers retry receipts by
	// sending the message again (real phones do); guarded by mu.
	answerRetries bool
	// deliveryReceipts says whether it sends delivery receipts for what
	// it receives; guarded by mu.
	deliveryReceipts bool
	// garble is how many of its next pairwise encryptions come out
	// undecryptable (a lost session, a corrupted store); guarded by mu.
	garble  int
	sent    map[string]sentRecord            // what it sent, for retries
	skSent  map[types.JID]map[types.JID]bool // group → devices that have its sender key
	greeted map[uint16]bool                  // devices sent their link-time sync (history.go)
	// sentAs is the sender form ("from") each companion last got a 1:1
	// message under.
	sentAs map[*companion]string

	// HistoryOnLink is what the phone sends each newly linked device, in
	// order, once it is first online, as WhatsApp sends INITIAL_BOOTSTRAP,
	// RECENT, PUSH_NAME… (history.go). Set it before linking.
	HistoryOnLink []*waHistorySync.HistorySync
	appState      appState // app state keys and collections (appstate.go)
	// What it answers on-demand history requests from, and the requests
	// (ondemand.go); guarded by mu.
	archive  map[types.JID][]HistoryMessage
	onDemand []OnDemandRequest

	inbox     *mailbox[Message]
	receipts  *mailbox[Receipt]
	presences *mailbox[Presence]
}

type sentRecord struct {
	to  types.JID
	msg *waE2E.Message
	at  time.Time
}

// Message is what a phone received.
type Message struct {
	ID string
	// Chat is the chat as the phone shows it: the other person in a 1:1
	// chat (for its own devices' messages, the DeviceSentMessage's
	// destination), or the group.
	Chat types.JID
	// From is the sending device.
	From types.JID
	// FromMe says the phone's own account sent it (a companion of it).
	FromMe bool
	Time   time.Time
	Msg    *waE2E.Message
	Node   *waBinary.Node
	Err    error // why it did not decrypt
}

// Text is the message's text or caption, whatever its kind.
func (m Message) Text() string {
	msg := m.Msg
	switch {
	case msg == nil:
		return ""
	case msg.Conversation != nil:
		return msg.GetConversation()
	case msg.ExtendedTextMessage != nil:
		return msg.GetExtendedTextMessage().GetText()
	case msg.ImageMessage != nil:
		return msg.GetImageMessage().GetCaption()
	case msg.VideoMessage != nil:
		return msg.GetVideoMessage().GetCaption()
	case msg.DocumentMessage != nil:
		return msg.GetDocumentMessage().GetCaption()
	}
	return ""
}

// Receipt is a receipt a client sent toward the phone's account.
type Receipt struct {
	From types.JID // the device that sent it
	Type string    // "" (delivery), inactive, read, played, retry, …
	IDs  []string
	Node *waBinary.Node
}

// NewPhone makes an account whose primary device the test drives: pn and
// lid are the user parts ("15550001111", "100000000000001").
func (s *Server) NewPhone(pn, lid, pushName string) *Phone {
	ident := keys.NewKeyPair()
	signed := ident.CreateSignedPreKey(1)
	s.mu.Lock()
	s.nextRegID++
	regID := s.nextRegID
	s.mu.Unlock()
	p := &Phone{
		srv: s, PN: types.NewJID(pn, types.DefaultUserServer), LID: types.NewJID(lid, types.HiddenUserServer),
		PushName: pushName, Platform: "android",
		identity: ident, regID: regID, signed: signed,
		store:      newSignalStore(ident, regID, signed),
		companions: map[uint16]*companion{}, nextDevice: 10,
		answerRetries: true, deliveryReceipts: true,
		sent:   map[string]sentRecord{},
		sentAs: map[*companion]string{},
		skSent: map[types.JID]map[types.JID]bool{},
		inbox:  newMailbox[Message](), receipts: newMailbox[Receipt](), presences: newMailbox[Presence](),
	}
	for i := uint32(1); i <= 200; i++ {
		k := keys.NewPreKey(100 + i)
		p.store.prekeys[k.KeyID] = k
		p.oneTime = append(p.oneTime, k.KeyID)
	}
	s.mu.Lock()
	s.phones[pn] = p
	s.lids[lid] = p
	s.mu.Unlock()
	return p
}

// takePreKey hands out one of the phone's one-time prekeys; s.mu is held.
func (p *Phone) takePreKey() *preKeyPub {
	if len(p.oneTime) == 0 {
		return nil
	}
	id := p.oneTime[0]
	p.oneTime = p.oneTime[1:]
	k := p.store.prekeys[id]
	return &preKeyPub{id: id, pub: *k.Pub}
}

// AnswerRetries sets whether the phone answers a client's retry receipt
// by sending the message again (on by default, as phones do).
func (p *Phone) AnswerRetries(on bool) {
	p.mu.Lock()
	p.answerRetries = on
	p.mu.Unlock()
}

// DeliveryReceipts sets whether the phone sends delivery receipts for
// what it receives (on by default).
func (p *Phone) DeliveryReceipts(on bool) {
	p.mu.Lock()
	p.deliveryReceipts = on
	p.mu.Unlock()
}

// NextMessage waits for the next message the phone received.
func (p *Phone) NextMessage(ctx context.Context) (Message, error) { return p.inbox.take(ctx) }

// WaitMessage waits for a received message that satisfies ok.
func (p *Phone) WaitMessage(ctx context.Context, ok func(Message) bool) (Message, error) {
	return p.inbox.waitFor(ctx, ok)
}

// Messages is every message the phone received so far.
func (p *Phone) Messages() []Message { return p.inbox.all() }

// NextReceipt waits for the next receipt sent toward the phone's account.
func (p *Phone) NextReceipt(ctx context.Context) (Receipt, error) { return p.receipts.take(ctx) }

// WaitReceipt waits for a receipt that satisfies ok.
func (p *Phone) WaitReceipt(ctx context.Context, ok func(Receipt) bool) (Receipt, error) {
	return p.receipts.waitFor(ctx, ok)
}

// WaitPresence waits for a presence or chat state a client sent to the
// phone's account.
func (p *Phone) WaitPresence(ctx context.Context, ok func(Presence) bool) (Presence, error) {
	return p.presences.waitFor(ctx, ok)
}

// Companions lists the account's linked devices.
func (p *Phone) Companions() []types.JID {
	p.srv.mu.Lock()
	defer p.srv.mu.Unlock()
	var out []types.JID
	for _, c := range p.companions {
		if !c.removed {
			out = append(out, c.JID())
		}
	}
	return out
}

// DeviceName is the name a linked device registered with (what the
// phone's list of linked devices shows).
func (p *Phone) DeviceName(dev types.JID) string {
	p.srv.mu.Lock()
	defer p.srv.mu.Unlock()
	if c := p.companions[dev.Device]; c != nil {
		return c.reg.os
	}
	return ""
}

// NewMessageID makes an id in the form phones use.
func NewMessageID() string {
	return "3A" + strings.ToUpper(hex.EncodeToString(randomBytes(9)))
}

// SendText sends a plain text message to a person or a group.
func (p *Phone) SendText(ctx context.Context, to types.JID, text string) (string, error) {
	return p.Send(ctx, to, &waE2E.Message{Conversation: proto.String(text)})
}

// Send sends msg to a person (user JID, either form) or a group.
func (p *Phone) Send(ctx context.Context, to types.JID, msg *waE2E.Message) (string, error) {
	id := NewMessageID()
	return id, p.SendWithID(ctx, to, id, msg)
}

// SendWithID is Send with the message id chosen by the caller (a
// redelivery from the phone reuses it).
func (p *Phone) SendWithID(ctx context.Context, to types.JID, id string, msg *waE2E.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.srv.clock()
	p.sent[id] = sentRecord{to: to, msg: msg, at: now}
	if to.Server == types.GroupServer {
		return p.sendGroup(ctx, to, id, msg, now, nil, 0)
	}
	return p.sendDirect(ctx, to, id, msg, now, nil, 0)
}

// addr is the Signal address the phone keeps for a companion, whatever
// form the client uses for itself: the phone-number device JID.
func addr(comp *companion) *protocol.SignalAddress { return comp.JID().SignalAddress() }

// encryptFor encrypts plain for a companion, starting a session from its
// prekey bundle when there is none (a pkmsg); p.mu is held.
func (p *Phone) encryptFor(ctx context.Context, comp *companion, plain []byte, fresh bool) (waBinary.Node, error) {
	a := addr(comp)
	builder := session.NewBuilderFromSignal(p.store, a, ser)
	has, _ := p.store.ContainsSession(ctx, a)
	if !has || fresh {
		s := p.srv
		s.mu.Lock()
		b, err := s.bundle(comp.JID())
		s.mu.Unlock()
		if err != nil {
			return waBinary.Node{}, err
		}
		bundle, err := parseBundle(comp.device, &b)
		if err != nil {
			return waBinary.Node{}, err
		}
		if err := builder.ProcessBundle(ctx, bundle); err != nil {
			return waBinary.Node{}, fmt.Errorf("process %s's bundle: %w", comp.JID(), err)
		}
	}
	ct, err := session.NewCipher(builder, a).Encrypt(ctx, pad(plain))
	if err != nil {
		return waBinary.Node{}, err
	}
	typ := "msg"
	if ct.Type() == protocol.PREKEY_TYPE {
		typ = "pkmsg"
	}
	out := ct.Serialize()
	if p.garble > 0 {
		p.garble--
		out[len(out)-1] ^= 0xff // the MAC no longer matches
	}
	return waBinary.Node{Tag: "enc", Attrs: waBinary.Attrs{"v": "2", "type": typ}, Content: out}, nil
}

// Garble makes the phone's next n pairwise encryptions undecryptable, so
// the client asks for them again with retry receipts.
func (p *Phone) Garble(n int) {
	p.mu.Lock()
	p.garble = n
	p.mu.Unlock()
}

func parseBundle(device uint16, n *waBinary.Node) (*prekey.Bundle, error) {
	reg, _ := n.GetChildByTag("registration").Content.([]byte)
	ident, _ := n.GetChildByTag("identity").Content.([]byte)
	skey, ok := parsePreKeyNode(n.GetChildByTag("skey"))
	if len(reg) != 4 || len(ident) != 32 || !ok {
		return nil, errors.New("incomplete prekey bundle")
	}
	idKey := identity.NewKey(ecc.NewDjbECPublicKey([32]byte(ident)))
	if k, ok := n.GetOptionalChildByTag("key"); ok {
		one, ok := parsePreKeyNode(k)
		if !ok {
			return nil, errors.New("bad one-time prekey")
		}
		return prekey.NewBundle(binary.BigEndian.Uint32(reg), uint32(device), optional.NewOptionalUint32(one.id), skey.id,
			ecc.NewDjbECPublicKey(one.pub), ecc.NewDjbECPublicKey(skey.pub), skey.sig, idKey), nil
	}
	return prekey.NewBundle(binary.BigEndian.Uint32(reg), uint32(device), optional.NewEmptyUint32(), skey.id,
		nil, ecc.NewDjbECPublicKey(skey.pub), skey.sig, idKey), nil
}

// pad adds WhatsApp's random padding (1–15 bytes of their count).
func pad(b []byte) []byte {
	n := randomBytes(1)[0] & 0xf
	if n == 0 {
		n = 0xf
	}
	return append(append([]byte(nil), b...), bytes.Repeat([]byte{n}, int(n))...)
}

func unpad(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, errors.New("empty plaintext")
	}
	n := int(b[len(b)-1])
	if n == 0 || n > len(b) || !bytes.HasSuffix(b, bytes.Repeat([]byte{byte(n)}, n)) {
		return nil, errors.New("plaintext without valid padding")
	}
	return b[:len(b)-n], nil
}

// HideNumber makes WhatsApp name this person to others by LID alone,
// without their phone number (as for people whose number a group or
// community hides), until called with false: in their 1:1 messages on a
// LIDAddressing server, in LID groups' messages and group info, and in
// history syncs.
func (p *Phone) HideNumber(hidden bool) { p.numberHidden.Store(hidden) }

// WithoutLID makes this phone's 1:1 messages addressed by number come
// without its LID beside (sender_lid), as before WhatsApp paired the two
// for a contact, until called with false.
func (p *Phone) WithoutLID(without bool) { p.lidUnpaired.Store(without) }

// AddressBy makes WhatsApp address this phone's next 1:1 messages by
// LID (with the number beside) or by number (with the LID beside),
// whatever the server's LIDAddressing: WhatsApp moves chats between the
// two, so one person's messages come both ways.
func (p *Phone) AddressBy(lid bool) {
	if lid {
		p.addressing.Store(1)
	} else {
		p.addressing.Store(2)
	}
}

// lidAddressed says whether the phone's 1:1 messages name it by LID.
func (p *Phone) lidAddressed() bool {
	switch p.addressing.Load() {
	case 1:
		return true
	case 2:
		return false
	}
	return p.srv.opts.LIDAddressing
}

// senderAttrs is how the phone appears as the sender of a 1:1 message.
func (p *Phone) senderAttrs(attrs waBinary.Attrs) {
	if p.lidAddressed() {
		attrs["from"] = p.LID
		if !p.numberHidden.Load() {
			attrs["sender_pn"] = p.PN
		}
	} else {
		attrs["from"] = p.PN
		if !p.lidUnpaired.Load() {
			attrs["sender_lid"] = p.LID
		}
	}
}

func msgType(msg *waE2E.Message) string {
	switch {
	case msg.ImageMessage != nil, msg.VideoMessage != nil, msg.AudioMessage != nil, msg.DocumentMessage != nil, msg.StickerMessage != nil:
		return "media"
	case msg.ReactionMessage != nil:
		return "reaction"
	case msg.PollCreationMessage != nil, msg.PollCreationMessageV3 != nil, msg.PollUpdateMessage != nil:
		return "poll"
	}
	return "text"
}

// sendDirect sends a 1:1 message: to the peer's phone in the clear (both
// phones are the fake's), Signal-encrypted to every companion of the
// peer, and as a DeviceSentMessage to the phone's own companions. only,
// when set, limits it to one device (answering a retry); p.mu is held.
func (p *Phone) sendDirect(ctx context.Context, to types.JID, id string, msg *waE2E.Message, at time.Time, only *companion, retry int) error {
	s := p.srv
	s.mu.Lock()
	peer := s.phoneOf(to.ToNonAD())
	var peerComps, ownComps []*companion
	if peer != nil {
		peerComps = liveCompanions(peer)
		ownComps = liveCompanions(p)
	}
	s.mu.Unlock()
	if peer == nil {
		return fmt.Errorf("%s is not on WhatsApp", to)
	}
	plain, err := proto.Marshal(msg)
	if err != nil {
		return err
	}
	if only == nil && peer != p {
		peer.inbox.push(Message{ID: id, Chat: p.PN, From: p.PN, Time: at, Msg: msg})
	}
	for _, comp := range peerComps {
		if only != nil && comp != only {
			continue
		}
		attrs := waBinary.Attrs{"id": id, "t": at.Unix(), "type": msgType(msg), "notify": p.PushName}
		p.senderAttrs(attrs)
		// The client keeps a session per sender address (and moves the
		// number's onto the LID's once it learns the pair): under another
		// form than the last, the phone starts one anew, as WhatsApp's
		// sessions per address do, rather than go on with one the client
		// filed elsewhere.
		from := fmt.Sprint(attrs["from"])
		last, ok := p.sentAs[comp]
		p.sentAs[comp] = from
		fresh := retry > 0 || (ok && last != from)
		enc, err := p.encryptFor(ctx, comp, plain, fresh)
		if err != nil {
			return err
		}
		if retry > 0 {
			enc.Attrs["count"] = retry
		}
		content := []waBinary.Node{enc}
		if vn, ok := p.verifiedName(); ok {
			content = append(content, vn)
		}
		s.mu.Lock()
		s.deliver(comp, "message", waBinary.Node{Tag: "message", Attrs: attrs, Content: content})
		s.mu.Unlock()
	}
	dsm, err := proto.Marshal(&waE2E.Message{DeviceSentMessage: &waE2E.DeviceSentMessage{DestinationJID: proto.String(peerJID(peer, s.opts.LIDAddressing).String()), Message: msg}})
	if err != nil {
		return err
	}
	for _, comp := range ownComps {
		if only != nil && comp != only {
			continue
		}
		enc, err := p.encryptFor(ctx, comp, dsm, retry > 0)
		if err != nil {
			return err
		}
		if retry > 0 {
			enc.Attrs["count"] = retry
		}
		attrs := waBinary.Attrs{"id": id, "t": at.Unix(), "type": msgType(msg)}
		if s.opts.LIDAddressing {
			attrs["from"], attrs["recipient"], attrs["peer_recipient_pn"] = p.LID, peer.LID, peer.PN
		} else {
			attrs["from"], attrs["recipient"], attrs["peer_recipient_lid"] = p.PN, peer.PN, peer.LID
		}
		s.mu.Lock()
		s.deliver(comp, "message", waBinary.Node{Tag: "message", Attrs: attrs, Content: []waBinary.Node{enc}})
		s.mu.Unlock()
	}
	return nil
}

func peerJID(p *Phone, lid bool) types.JID {
	if lid {
		return p.LID
	}
	return p.PN
}

func liveCompanions(p *Phone) []*companion {
	var out []*companion
	for _, c := range p.companions {
		if !c.removed {
			out = append(out, c)
		}
	}
	return out
}

// receive decrypts what a companion sent to the phone: one <enc> for
// device 0, and for groups the skmsg beside it.
func (p *Phone) receive(ctx context.Context, from *companion, stanza *waBinary.Node, enc waBinary.Node, skmsg *waBinary.Node, chat types.JID, identityNode *waBinary.Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id, _ := stanza.Attrs["id"].(string)
	m := Message{ID: id, From: from.JID(), FromMe: from.phone == p, Time: p.srv.clock(), Node: stanza, Chat: chat}
	msg, err := p.decryptFrom(ctx, from, enc, identityNode)
	if err == nil {
		if skdm := msg.GetSenderKeyDistributionMessage(); skdm != nil {
			err = p.processSKDM(ctx, from, skdm)
		}
	}
	if err == nil && skmsg != nil {
		msg, err = p.decryptGroup(ctx, from, chat, *skmsg)
	}
	if err == nil {
		if dsm := msg.GetDeviceSentMessage(); dsm != nil && from.phone == p {
			if dest, perr := types.ParseJID(dsm.GetDestinationJID()); perr == nil {
				m.Chat = dest
			}
			msg = dsm.GetMessage()
		}
	}
	m.Msg, m.Err = msg, err
	if err != nil {
		p.srv.logf("fakewa: %s could not decrypt %s from %s: %v", p.PN.User, id, from.JID(), err)
	}
	if msg != nil && msg.GetProtocolMessage() != nil {
		// A peer message from its own companion (app state key request,
		// history request, placeholder resend): the phone acts on it, it
		// is not chat. Others reach the handlers only to be noted.
		peer := from.phone == p && chat == p.PN && stanza.Attrs["category"] == "peer"
		p.onProtocolMessage(ctx, from, id, msg, peer)
	}
	p.inbox.push(m)
	if err == nil && from.phone != p && p.deliveryReceipts {
		attrs := waBinary.Attrs{"id": id, "t": p.srv.clock().Unix()}
		if chat.Server == types.GroupServer {
			attrs["from"], attrs["participant"] = chat, p.PN
		} else {
			p.senderAttrs(attrs)
		}
		p.srv.mu.Lock()
		p.srv.deliver(from, "receipt", waBinary.Node{Tag: "receipt", Attrs: attrs})
		p.srv.mu.Unlock()
	}
}

// onProtocolMessage is extended by features that answer a companion's
// peer requests: they get every protocol message the phone decrypts
// (id is the stanza's), and act only when peer says it is a peer message
// from one of its own companions; p.mu is held.
var protocolMessageHandlers []func(p *Phone, ctx context.Context, from *companion, id string, msg *waE2E.Message, peer bool)

func (p *Phone) onProtocolMessage(ctx context.Context, from *companion, id string, msg *waE2E.Message, peer bool) {
	for _, h := range protocolMessageHandlers {
		h(p, ctx, from, id, msg, peer)
	}
}

// decryptFrom decrypts a pairwise <enc>; a pkmsg must come with the
// sender's account-signed device identity, which a phone checks.
func (p *Phone) decryptFrom(ctx context.Context, from *companion, enc waBinary.Node, identityNode *waBinary.Node) (*waE2E.Message, error) {
	ct, _ := enc.Content.([]byte)
	typ, _ := enc.Attrs["type"].(string)
	a := addr(from)
	cipher := session.NewCipher(session.NewBuilderFromSignal(p.store, a, ser), a)
	var plain []byte
	var err error
	switch typ {
	case "pkmsg":
		if err := p.checkDeviceIdentity(from, identityNode); err != nil {
			return nil, err
		}
		var pk *protocol.PreKeySignalMessage
		pk, err = protocol.NewPreKeySignalMessageFromBytes(ct, ser.PreKeySignalMessage, ser.SignalMessage)
		if err == nil {
			plain, err = cipher.DecryptMessage(ctx, pk)
		}
	case "msg":
		var sm *protocol.SignalMessage
		sm, err = protocol.NewSignalMessageFromBytes(ct, ser.SignalMessage)
		if err == nil {
			plain, err = cipher.Decrypt(ctx, sm)
		}
	default:
		return nil, fmt.Errorf("unknown enc type %q", typ)
	}
	if err != nil {
		return nil, err
	}
	return unpadMessage(plain)
}

// checkDeviceIdentity verifies that a companion's first message carries
// its device identity signed by its own account and by itself.
func (p *Phone) checkDeviceIdentity(from *companion, n *waBinary.Node) error {
	if n == nil {
		return errors.New("pkmsg without device-identity")
	}
	raw, _ := n.Content.([]byte)
	var signed waAdv.ADVSignedDeviceIdentity
	if err := proto.Unmarshal(raw, &signed); err != nil {
		return err
	}
	owner := from.phone
	if !bytes.Equal(signed.AccountSignatureKey, owner.identity.Pub[:]) ||
		!ecc.VerifySignature(ecc.NewDjbECPublicKey(*owner.identity.Pub), concat([]byte{6, 0}, signed.Details, from.reg.identity[:]), [64]byte(signed.AccountSignature)) {
		return errors.New("device identity not signed by the sender's account")
	}
	if len(signed.DeviceSignature) != 64 || !ecc.VerifySignature(ecc.NewDjbECPublicKey(from.reg.identity),
		concat([]byte{6, 1}, signed.Details, from.reg.identity[:], owner.identity.Pub[:]), [64]byte(signed.DeviceSignature)) {
		return errors.New("device identity not signed by the sending device")
	}
	return nil
}

func (p *Phone) processSKDM(ctx context.Context, from *companion, skdm *waE2E.SenderKeyDistributionMessage) error {
	dm, err := protocol.NewSenderKeyDistributionMessageFromBytes(skdm.GetAxolotlSenderKeyDistributionMessage(), ser.SenderKeyDistributionMessage)
	if err != nil {
		return err
	}
	name := protocol.NewSenderKeyName(skdm.GetGroupID(), addr(from))
	return groups.NewGroupSessionBuilder(p.store, ser).Process(ctx, name, dm)
}

func (p *Phone) decryptGroup(ctx context.Context, from *companion, chat types.JID, enc waBinary.Node) (*waE2E.Message, error) {
	ct, _ := enc.Content.([]byte)
	sk, err := protocol.NewSenderKeyMessageFromBytes(ct, ser.SenderKeyMessage)
	if err != nil {
		return nil, err
	}
	name := protocol.NewSenderKeyName(chat.String(), addr(from))
	plain, err := groups.NewGroupCipher(groups.NewGroupSessionBuilder(p.store, ser), name, p.store).Decrypt(ctx, sk)
	if err != nil {
		return nil, err
	}
	return unpadMessage(plain)
}

// unpadMessage is the message in a decrypted, padded plaintext.
func unpadMessage(plain []byte) (*waE2E.Message, error) {
	plain, err := unpad(plain)
	if err != nil {
		return nil, err
	}
	var msg waE2E.Message
	if err := proto.Unmarshal(plain, &msg); err != nil {
		return nil, err
	}
	return &msg, nil
}

// onRetry answers a companion's retry receipt for a message this phone
// sent: a new session from the keys it sent along (or a fresh bundle),
// then the message again with the retry count.
func (p *Phone) onRetry(ctx context.Context, from *companion, r *waBinary.Node) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id, _ := r.Attrs["id"].(string)
	rec, ok := p.sent[id]
	if !ok || !p.answerRetries {
		return
	}
	retryNode := r.GetChildByTag("retry")
	count := retryNode.AttrGetter().OptionalInt("count")
	if count <= 0 {
		count = 1
	}
	ctx = context.WithoutCancel(ctx)
	// The client lost our session state: start over.
	p.store.DeleteSession(ctx, addr(from))
	if k, ok := r.GetOptionalChildByTag("keys"); ok {
		p.adoptRetryKeys(from, &k)
	}
	var err error
	if rec.to.Server == types.GroupServer {
		if devs := p.skSent[rec.to]; devs != nil {
			delete(devs, from.JID())
		}
		err = p.sendGroup(ctx, rec.to, id, rec.msg, rec.at, from, count)
	} else {
		err = p.sendDirect(ctx, rec.to, id, rec.msg, rec.at, from, count)
	}
	if err != nil {
		p.srv.logf("fakewa: %s could not answer the retry of %s: %v", p.PN.User, id, err)
	}
}

// adoptRetryKeys puts the one-time prekey a retry receipt carries first in
// the companion's list, so the next bundle uses it.
func (p *Phone) adoptRetryKeys(from *companion, keys *waBinary.Node) {
	k, ok := parsePreKeyNode(keys.GetChildByTag("key"))
	if !ok {
		return
	}
	p.srv.mu.Lock()
	from.prekeys = append([]preKeyPub{k}, from.prekeys...)
	p.srv.mu.Unlock()
}

// SendPeer sends a protocol message from the phone to its own companions
// only, as phones send history sync notifications and app state keys
// (category=peer).
func (p *Phone) SendPeer(ctx context.Context, msg *waE2E.Message) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sendPeerLocked(ctx, msg)
}

func (p *Phone) sendPeerLocked(ctx context.Context, msg *waE2E.Message) (string, error) {
	s := p.srv
	id := NewMessageID()
	s.mu.Lock()
	comps := liveCompanions(p)
	s.mu.Unlock()
	plain, err := proto.Marshal(msg)
	if err != nil {
		return "", err
	}
	for _, comp := range comps {
		enc, err := p.encryptFor(ctx, comp, plain, false)
		if err != nil {
			return "", err
		}
		attrs := waBinary.Attrs{"id": id, "t": s.clock().Unix(), "type": "text", "category": "peer", "from": p.PN}
		s.mu.Lock()
		s.deliver(comp, "message", waBinary.Node{Tag: "message", Attrs: attrs, Content: []waBinary.Node{enc}})
		s.mu.Unlock()
	}
	return id, nil
}
