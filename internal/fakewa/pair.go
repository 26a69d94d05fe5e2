package fakewa

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mau.fi/libsignal/ecc"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/proto/waCompanionReg"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/hkdfutil"
	"go.mau.fi/whatsmeow/util/keys"
	"golang.org/x/crypto/curve25519"
	"google.golang.org/protobuf/proto"
)

// registration is what a new client offers before it is paired: the keys
// WhatsApp keeps for it and hands to anyone who wants to message it.
type registration struct {
	regID    uint32
	identity [32]byte
	signed   preKeyPub
	os       string // the device name shown in the phone's linked devices
}

type preKeyPub struct {
	id  uint32
	pub [32]byte
	sig [64]byte
}

// companion is a paired client device (a linked device of an account).
type companion struct {
	phone    *Phone
	device   uint16
	keyIndex uint32
	noisePub [32]byte
	reg      registration
	prekeys  []preKeyPub // uploaded, not yet handed out
	removed  bool
	conn     *conn // the logged-in connection, if any
	// presence is what the device last announced on its current (or
	// last) connection: "", available or unavailable (presence.go).
	presence string
	// pending is WhatsApp's offline queue: stanzas sent to this device
	// and not yet acknowledged, in order.
	pending []*pendingStanza
}

type pendingStanza struct {
	class   string // message, receipt, notification
	id      string
	node    waBinary.Node
	written bool // sent on the device's connection
}

// JID is the companion's device JID (phone number form).
func (c *companion) JID() types.JID {
	j := c.phone.PN
	j.Device = c.device
	return j
}

func (c *companion) LID() types.JID {
	j := c.phone.LID
	j.Device = c.device
	return j
}

// qrPairing is a client waiting for a phone to scan one of its codes.
type qrPairing struct {
	conn    *conn
	refs    []string
	expires []time.Time
}

// codePairing is a client waiting for the code it showed to be typed into
// the phone it named.
type codePairing struct {
	conn     *conn
	phone    types.JID
	wrapped  []byte // the companion's ephemeral key, wrapped with the code
	ref      string
	finished chan *waBinary.Node // the client's companion_finish
	taken    bool                // a phone is pairing with it
}

// accept runs after the handshake: a login for a paired device, or a new
// client that wants to pair. It reports whether to read on.
func (s *Server) accept(c *conn) bool {
	if v, old := s.outdated(c); old {
		// Before pairing or login alike: WhatsApp refuses an old client
		// whatever it came for.
		s.logf("fakewa: client version %s refused as outdated", v)
		c.closeAfter(waBinary.Node{Tag: "failure", Attrs: waBinary.Attrs{"reason": "405", "location": "fake"}})
		return true
	}
	s.mu.Lock()
	refuse, banExpire := s.refuse, s.banExpire
	s.mu.Unlock()
	if c.payload.Username == nil {
		return s.acceptRegistration(c)
	}
	pn := types.NewJID(fmt.Sprint(c.payload.GetUsername()), types.DefaultUserServer)
	pn.Device = uint16(c.payload.GetDevice())
	s.mu.Lock()
	p, comp := s.device(pn)
	if p == nil || comp == nil || comp.noisePub != c.noisePub {
		s.mu.Unlock()
		// Unknown device, removed, or not the key it paired with.
		c.closeAfter(waBinary.Node{Tag: "failure", Attrs: waBinary.Attrs{"reason": "401", "location": "fake"}})
		return true
	}
	if refuse == "banned" {
		s.mu.Unlock()
		c.closeAfter(waBinary.Node{Tag: "failure", Attrs: waBinary.Attrs{
			"reason": "402", "code": "101", "expire": fmt.Sprint(int(banExpire.Seconds())), "location": "fake"}})
		return true
	}
	old := comp.conn
	comp.conn, c.comp = c, comp
	comp.presence = "" // a new connection starts unavailable
	s.mu.Unlock()
	if old != nil && old != c {
		// One session per device: the older connection is replaced.
		old.closeAfter(waBinary.Node{Tag: "stream:error", Content: []waBinary.Node{{Tag: "conflict", Attrs: waBinary.Attrs{"type": "replaced"}}}})
	}
	return c.send(waBinary.Node{Tag: "success", Attrs: waBinary.Attrs{
		"t": s.clock().Unix(), "lid": comp.LID(), "props": "1", "abprops": "1", "location": "fake", "creation": "1700000000",
	}}) == nil
}

func (s *Server) acceptRegistration(c *conn) bool {
	d := c.payload.GetDevicePairingData()
	if d == nil || len(d.ERegid) != 4 || len(d.EIdent) != 32 || len(d.ESkeyID) != 3 || len(d.ESkeyVal) != 32 || len(d.ESkeySig) != 64 {
		s.logf("fakewa: registration without complete pairing data")
		c.closeAfter(waBinary.Node{Tag: "failure", Attrs: waBinary.Attrs{"reason": "400"}})
		return true
	}
	reg := registration{regID: binary.BigEndian.Uint32(d.ERegid)}
	copy(reg.identity[:], d.EIdent)
	reg.signed.id = binary.BigEndian.Uint32(append([]byte{0}, d.ESkeyID...))
	copy(reg.signed.pub[:], d.ESkeyVal)
	copy(reg.signed.sig[:], d.ESkeySig)
	if !verifyPreKey(reg.identity, reg.signed) {
		s.logf("fakewa: registration's signed prekey is not signed by its identity")
		c.closeAfter(waBinary.Node{Tag: "failure", Attrs: waBinary.Attrs{"reason": "400"}})
		return true
	}
	var props waCompanionReg.DeviceProps
	if proto.Unmarshal(d.DeviceProps, &props) == nil {
		reg.os = props.GetOs()
	}
	refs := make([]string, s.opts.QRRefs)
	expires := make([]time.Time, len(refs))
	now := s.clock()
	window := time.Duration(0)
	for i := range refs {
		refs[i] = "2@" + base64.StdEncoding.EncodeToString(randomBytes(24))
		// The client's own schedule: 60 s for the first of six, else 20 s.
		if i == 0 && len(refs) == 6 {
			window += 60 * time.Second
		} else {
			window += 20 * time.Second
		}
		expires[i] = now.Add(window + 5*time.Second)
	}
	qp := &qrPairing{conn: c, refs: refs, expires: expires}
	s.mu.Lock()
	c.regData = &reg
	c.pairing = qp
	for _, r := range refs {
		s.qrRefs[r] = qp
	}
	s.mu.Unlock()
	content := make([]waBinary.Node, len(refs))
	for i, r := range refs {
		content[i] = waBinary.Node{Tag: "ref", Content: []byte(r)}
	}
	go func() {
		_, err := c.sendIQ(waBinary.Node{Tag: "iq", Attrs: waBinary.Attrs{
			"from": types.ServerJID, "type": "set", "id": s.nextID(), "xmlns": "md",
		}, Content: []waBinary.Node{{Tag: "pair-device", Content: content}}}, 20*time.Second)
		if err != nil {
			s.logf("fakewa: pair-device: %v", err)
		}
	}()
	return true
}

func verifyPreKey(identity [32]byte, k preKeyPub) bool {
	msg := append([]byte{ecc.DjbType}, k.pub[:]...)
	return ecc.VerifySignature(ecc.NewDjbECPublicKey(identity), msg, k.sig)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// ErrCodeExpired is a QR code or pairing code that no client is showing.
var ErrCodeExpired = errors.New("this code is not valid (expired, already used, or never shown)")

// ScanQR is the phone scanning a code a client shows: the string the
// client encodes in its QR ("ref,noise,identity,adv"). It returns once
// the client has signed the pairing; the client then reconnects and logs
// in by itself.
func (p *Phone) ScanQR(ctx context.Context, code string) (types.JID, error) {
	parts := strings.Split(code, ",")
	if len(parts) != 4 {
		return types.EmptyJID, fmt.Errorf("not a WhatsApp linking code: %q", code)
	}
	noise, err1 := base64.StdEncoding.DecodeString(parts[1])
	ident, err2 := base64.StdEncoding.DecodeString(parts[2])
	adv, err3 := base64.StdEncoding.DecodeString(parts[3])
	if err1 != nil || err2 != nil || err3 != nil || len(noise) != 32 || len(ident) != 32 || len(adv) != 32 {
		return types.EmptyJID, fmt.Errorf("not a WhatsApp linking code: %q", code)
	}
	s := p.srv
	s.mu.Lock()
	qp := s.qrRefs[parts[0]]
	var c *conn
	if qp != nil {
		c = qp.conn
		for i, r := range qp.refs {
			if r == parts[0] && s.clock().After(qp.expires[i]) {
				qp = nil
				break
			}
		}
	}
	if qp != nil && (c.regData.identity != [32]byte(ident) || c.noisePub != [32]byte(noise)) {
		qp = nil // a code whose keys are not the client's
	}
	if qp != nil {
		for _, r := range qp.refs {
			delete(s.qrRefs, r)
		}
	}
	multidevice := !p.NoMultidevice
	s.mu.Unlock()
	if qp == nil {
		return types.EmptyJID, ErrCodeExpired
	}
	select {
	case <-c.done:
		return types.EmptyJID, ErrCodeExpired
	default:
	}
	if !multidevice {
		// An old WhatsApp tells the client to fall back to the legacy web.
		c.send(waBinary.Node{Tag: "ib", Attrs: waBinary.Attrs{"from": types.ServerJID}, Content: []waBinary.Node{{Tag: "downgrade_webclient"}}})
		return types.EmptyJID, errors.New("this phone's WhatsApp has no linked-device support")
	}
	return s.pair(ctx, c, p, adv)
}

// pair sends pair-success signed by the phone, checks the client's
// device signature, and registers the companion.
func (s *Server) pair(ctx context.Context, c *conn, p *Phone, advSecret []byte) (types.JID, error) {
	s.mu.Lock()
	p.nextDevice++
	dev, keyIndex := p.nextDevice, uint32(p.nextDevice)
	reg := *c.regData
	s.mu.Unlock()
	details, err := proto.Marshal(&waAdv.ADVDeviceIdentity{
		RawID: proto.Uint32(binary.BigEndian.Uint32(randomBytes(4))), Timestamp: proto.Uint64(uint64(s.clock().Unix())),
		KeyIndex: proto.Uint32(keyIndex), AccountType: waAdv.ADVEncryptionType_E2EE.Enum(), DeviceType: waAdv.ADVEncryptionType_E2EE.Enum(),
	})
	if err != nil {
		return types.EmptyJID, err
	}
	accountSig := ecc.CalculateSignature(ecc.NewDjbECPrivateKey(*p.identity.Priv), concat([]byte{6, 0}, details, reg.identity[:]))
	signed, err := proto.Marshal(&waAdv.ADVSignedDeviceIdentity{Details: details, AccountSignatureKey: p.identity.Pub[:], AccountSignature: accountSig[:]})
	if err != nil {
		return types.EmptyJID, err
	}
	mac := hmac.New(sha256.New, advSecret)
	mac.Write(signed)
	container, err := proto.Marshal(&waAdv.ADVSignedDeviceIdentityHMAC{Details: signed, HMAC: mac.Sum(nil), AccountType: waAdv.ADVEncryptionType_E2EE.Enum()})
	if err != nil {
		return types.EmptyJID, err
	}
	jid, lid := p.PN, p.LID
	jid.Device, lid.Device = dev, dev
	answer, err := c.sendIQ(waBinary.Node{Tag: "iq", Attrs: waBinary.Attrs{"from": types.ServerJID, "type": "set", "id": s.nextID(), "xmlns": "md"},
		Content: []waBinary.Node{{Tag: "pair-success", Content: []waBinary.Node{
			{Tag: "device-identity", Content: container},
			{Tag: "platform", Attrs: waBinary.Attrs{"name": p.Platform}},
			{Tag: "device", Attrs: waBinary.Attrs{"jid": jid, "lid": lid}},
		}}}}, 30*time.Second)
	if err != nil {
		return types.EmptyJID, fmt.Errorf("client did not answer pair-success: %w", err)
	}
	if typ, _ := answer.Attrs["type"].(string); typ != "result" {
		return types.EmptyJID, fmt.Errorf("client refused the pairing: %s", answer.XMLString())
	}
	signedBack, ok := answer.GetChildByTag("pair-device-sign", "device-identity").Content.([]byte)
	if !ok {
		return types.EmptyJID, fmt.Errorf("client's pairing answer has no signed identity: %s", answer.XMLString())
	}
	var back waAdv.ADVSignedDeviceIdentity
	if err := proto.Unmarshal(signedBack, &back); err != nil {
		return types.EmptyJID, err
	}
	if !bytes.Equal(back.Details, details) || len(back.DeviceSignature) != 64 ||
		!ecc.VerifySignature(ecc.NewDjbECPublicKey(reg.identity), concat([]byte{6, 1}, details, reg.identity[:], p.identity.Pub[:]), [64]byte(back.DeviceSignature)) {
		return types.EmptyJID, errors.New("client's device signature does not verify")
	}
	comp := &companion{phone: p, device: dev, keyIndex: keyIndex, noisePub: c.noisePub, reg: reg}
	s.mu.Lock()
	p.companions[dev] = comp
	s.companions[jid] = comp
	c.pairing = nil
	s.mu.Unlock()
	s.logf("fakewa: %s paired device %d (%q)", p.PN.User, dev, reg.os)
	// The client logs in on a new connection: 515 tells it to.
	c.closeAfter(waBinary.Node{Tag: "stream:error", Attrs: waBinary.Attrs{"code": "515"}})
	return jid, nil
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// companionHello is the client asking to pair by code with a phone.
func (s *Server) companionHello(c *conn, iq *waBinary.Node, reg *waBinary.Node) {
	phone, _ := reg.Attrs["jid"].(types.JID)
	wrapped, _ := reg.GetChildByTag("link_code_pairing_wrapped_companion_ephemeral_pub").Content.([]byte)
	noise, _ := reg.GetChildByTag("companion_server_auth_key_pub").Content.([]byte)
	if len(wrapped) != 80 || !bytes.Equal(noise, c.noisePub[:]) {
		c.send(iqError(iq, 400, "bad-request"))
		return
	}
	cp := &codePairing{conn: c, phone: phone, wrapped: wrapped, ref: base64.StdEncoding.EncodeToString(randomBytes(16)), finished: make(chan *waBinary.Node, 1)}
	s.mu.Lock()
	s.codes[cp.ref] = cp
	s.mu.Unlock()
	c.send(result(iq, waBinary.Node{Tag: "link_code_companion_reg", Content: []waBinary.Node{{Tag: "link_code_pairing_ref", Content: []byte(cp.ref)}}}))
}

// companionFinish hands the client's key bundle to the phone waiting for it.
func (s *Server) companionFinish(c *conn, iq *waBinary.Node, reg *waBinary.Node) {
	ref, _ := reg.GetChildByTag("link_code_pairing_ref").Content.([]byte)
	s.mu.Lock()
	cp := s.codes[string(ref)]
	s.mu.Unlock()
	if cp == nil || cp.conn != c {
		c.send(iqError(iq, 404, "item-not-found"))
		return
	}
	c.send(result(iq))
	select {
	case cp.finished <- reg:
	default:
	}
}

// EnterPairingCode is the phone's owner typing the code a client showed
// ("KJ7Q-W2ZP"; the dash is optional). It returns once paired.
func (p *Phone) EnterPairingCode(ctx context.Context, code string) (types.JID, error) {
	code = strings.ToUpper(strings.ReplaceAll(code, "-", ""))
	s := p.srv
	s.mu.Lock()
	var cp *codePairing
	for _, x := range s.codes {
		if x.phone.User == p.PN.User && !x.taken {
			select {
			case <-x.conn.done:
				continue
			default:
			}
			cp = x
		}
	}
	if cp != nil {
		cp.taken = true
	}
	s.mu.Unlock()
	if cp == nil {
		return types.EmptyJID, ErrCodeExpired
	}
	defer func() {
		s.mu.Lock()
		delete(s.codes, cp.ref)
		s.mu.Unlock()
	}()
	compEph := unwrapWithCode(code, cp.wrapped)
	phoneEph := keys.NewKeyPair()
	wrapped, err := wrapWithCode(code, phoneEph.Pub[:])
	if err != nil {
		return types.EmptyJID, err
	}
	err = cp.conn.send(waBinary.Node{Tag: "notification", Attrs: waBinary.Attrs{
		"from": types.ServerJID, "type": "link_code_companion_reg", "id": s.nextID(), "t": s.clock().Unix(),
	}, Content: []waBinary.Node{{Tag: "link_code_companion_reg", Attrs: waBinary.Attrs{"stage": "primary_hello"}, Content: []waBinary.Node{
		{Tag: "link_code_pairing_ref", Content: []byte(cp.ref)},
		{Tag: "link_code_pairing_wrapped_primary_ephemeral_pub", Content: wrapped},
		{Tag: "primary_identity_pub", Content: p.identity.Pub[:]},
	}}}})
	if err != nil {
		return types.EmptyJID, err
	}
	var finish *waBinary.Node
	select {
	case finish = <-cp.finished:
	case <-cp.conn.done:
		return types.EmptyJID, ErrCodeExpired
	case <-ctx.Done():
		return types.EmptyJID, ctx.Err()
	}
	bundle, _ := finish.GetChildByTag("link_code_pairing_wrapped_key_bundle").Content.([]byte)
	if len(bundle) < 32+12+16 {
		return types.EmptyJID, errors.New("client's key bundle is too short")
	}
	ephShared, err := curve25519.X25519(phoneEph.Priv[:], compEph)
	if err != nil {
		return types.EmptyJID, err
	}
	key := hkdfutil.SHA256(ephShared, bundle[:32], []byte("link_code_pairing_key_bundle_encryption_key"), 32)
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	plain, err := gcm.Open(nil, bundle[32:44], bundle[44:], nil)
	if err != nil || len(plain) != 96 {
		// What a phone shows when the code typed is not the client's.
		return types.EmptyJID, errors.New("incorrect code: the key bundle does not decrypt")
	}
	compIdentity, primaryIdentity, advRandom := plain[:32], plain[32:64], plain[64:]
	if !bytes.Equal(primaryIdentity, p.identity.Pub[:]) || !bytes.Equal(compIdentity, cp.conn.regData.identity[:]) {
		return types.EmptyJID, errors.New("client's key bundle names other identities")
	}
	idShared, err := curve25519.X25519(p.identity.Priv[:], compIdentity)
	if err != nil {
		return types.EmptyJID, err
	}
	adv := hkdfutil.SHA256(concat(ephShared, idShared, advRandom), nil, []byte("adv_secret"), 32)
	return s.pair(ctx, cp.conn, p, adv)
}

func codeKey(code string, salt []byte) []byte {
	k, _ := pbkdf2.Key(sha256.New, code, salt, 2<<16, 32)
	return k
}

func unwrapWithCode(code string, wrapped []byte) []byte {
	block, _ := aes.NewCipher(codeKey(code, wrapped[:32]))
	out := make([]byte, 32)
	cipher.NewCTR(block, wrapped[32:48]).XORKeyStream(out, wrapped[48:80])
	return out
}

func wrapWithCode(code string, pub []byte) ([]byte, error) {
	salt, iv := randomBytes(32), randomBytes(16)
	block, err := aes.NewCipher(codeKey(code, salt))
	if err != nil {
		return nil, err
	}
	enc := make([]byte, 32)
	cipher.NewCTR(block, iv).XORKeyStream(enc, pub)
	return concat(salt, iv, enc), nil
}
