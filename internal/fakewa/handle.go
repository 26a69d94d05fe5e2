package fakewa

import (
	"context"
	"encoding/binary"
	"fmt"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
)

// handle answers one node from a client.
func (s *Server) handle(c *conn, n *waBinary.Node) {
	switch n.Tag {
	case "iq":
		s.handleIQ(c, n)
	case "message":
		s.handleClientMessage(c, n)
	case "receipt":
		s.handleClientReceipt(c, n)
	case "ack":
		s.handleClientAck(c, n)
	case "presence", "chatstate":
		s.handlePresence(c, n)
	}
}

func (s *Server) handleIQ(c *conn, iq *waBinary.Node) {
	xmlns, _ := iq.Attrs["xmlns"].(string)
	typ, _ := iq.Attrs["type"].(string)
	children := iq.GetChildren()
	first := waBinary.Node{}
	if len(children) > 0 {
		first = children[0]
	}
	s.mu.Lock()
	comp := c.comp
	s.mu.Unlock()
	switch {
	case xmlns == "md" && first.Tag == "link_code_companion_reg":
		switch first.Attrs["stage"] {
		case "companion_hello":
			s.companionHello(c, iq, &first)
		case "companion_finish":
			s.companionFinish(c, iq, &first)
		default:
			c.send(iqError(iq, 400, "bad-request"))
		}
		return
	case comp == nil:
		// Before login only pairing is allowed; keep-alives are answered.
		c.send(result(iq))
		return
	case xmlns == "encrypt" && typ == "get" && first.Tag == "count":
		s.mu.Lock()
		n := len(comp.prekeys)
		s.mu.Unlock()
		c.send(result(iq, waBinary.Node{Tag: "count", Attrs: waBinary.Attrs{"value": n}}))
	case xmlns == "encrypt" && typ == "set":
		s.uploadPreKeys(c, comp, iq)
	case xmlns == "encrypt" && typ == "get" && first.Tag == "key":
		s.fetchPreKeys(c, iq, &first)
	case xmlns == "passive":
		// Active before the answer: the client says it is connected once
		// answered, and the server must by then count it online.
		if first.Tag == "active" {
			s.activate(c)
		}
		c.send(result(iq))
	case xmlns == "usync":
		s.usync(c, comp, iq)
	case xmlns == "md" && first.Tag == "remove-companion-device":
		s.mu.Lock()
		comp.removed = true
		delete(s.companions, comp.JID())
		delete(comp.phone.companions, comp.device)
		comp.pending = nil
		s.mu.Unlock()
		s.logf("fakewa: %s logged itself out", comp.JID())
		c.send(result(iq))
	case xmlns == "privacy" && typ == "get":
		c.send(result(iq, waBinary.Node{Tag: "privacy", Content: []waBinary.Node{
			{Tag: "category", Attrs: waBinary.Attrs{"name": "readreceipts", "value": "all"}},
			{Tag: "category", Attrs: waBinary.Attrs{"name": "last", "value": "all"}},
			{Tag: "category", Attrs: waBinary.Attrs{"name": "online", "value": "all"}},
			{Tag: "category", Attrs: waBinary.Attrs{"name": "profile", "value": "all"}},
			{Tag: "category", Attrs: waBinary.Attrs{"name": "status", "value": "all"}},
			{Tag: "category", Attrs: waBinary.Attrs{"name": "groupadd", "value": "all"}},
		}}))
	default:
		if !s.handleMoreIQ(c, comp, iq, xmlns, typ, first) {
			// WhatsApp answers what it does not care about with an empty
			// result; so does the fake (keep-alives among them).
			c.send(result(iq))
		}
	}
}

// handleMoreIQ is extended by the feature files (groups, media, app
// state, pictures); it reports whether it answered.
func (s *Server) handleMoreIQ(c *conn, comp *companion, iq *waBinary.Node, xmlns, typ string, first waBinary.Node) bool {
	for _, h := range iqHandlers {
		if h(s, c, comp, iq, xmlns, typ, first) {
			return true
		}
	}
	return false
}

type iqHandler func(s *Server, c *conn, comp *companion, iq *waBinary.Node, xmlns, typ string, first waBinary.Node) bool

var iqHandlers []iqHandler

func (s *Server) uploadPreKeys(c *conn, comp *companion, iq *waBinary.Node) {
	reg, _ := iq.GetChildByTag("registration").Content.([]byte)
	ident, _ := iq.GetChildByTag("identity").Content.([]byte)
	if len(reg) != 4 || binary.BigEndian.Uint32(reg) != comp.reg.regID || [32]byte(ident) != comp.reg.identity {
		// Keys that are not the paired device's.
		c.send(iqError(iq, 406, "not-acceptable"))
		return
	}
	var keys []preKeyPub
	list := iq.GetChildByTag("list")
	for _, k := range list.GetChildren() {
		pk, ok := parsePreKeyNode(k)
		if !ok {
			c.send(iqError(iq, 400, "bad-request"))
			return
		}
		keys = append(keys, pk)
	}
	skey, ok := parsePreKeyNode(iq.GetChildByTag("skey"))
	if !ok || !verifyPreKey(comp.reg.identity, skey) {
		c.send(iqError(iq, 406, "not-acceptable"))
		return
	}
	s.mu.Lock()
	comp.prekeys = append(comp.prekeys, keys...)
	comp.reg.signed = skey
	s.mu.Unlock()
	c.send(result(iq))
}

func parsePreKeyNode(n waBinary.Node) (preKeyPub, bool) {
	var k preKeyPub
	id, _ := n.GetChildByTag("id").Content.([]byte)
	val, _ := n.GetChildByTag("value").Content.([]byte)
	if len(id) != 3 || len(val) != 32 {
		return k, false
	}
	k.id = binary.BigEndian.Uint32(append([]byte{0}, id...))
	copy(k.pub[:], val)
	if n.Tag == "skey" {
		sig, _ := n.GetChildByTag("signature").Content.([]byte)
		if len(sig) != 64 {
			return k, false
		}
		copy(k.sig[:], sig)
	}
	return k, true
}

func preKeyNode(tag string, k preKeyPub, signed bool) waBinary.Node {
	var id [4]byte
	binary.BigEndian.PutUint32(id[:], k.id)
	content := []waBinary.Node{{Tag: "id", Content: id[1:]}, {Tag: "value", Content: k.pub[:]}}
	if signed {
		content = append(content, waBinary.Node{Tag: "signature", Content: k.sig[:]})
	}
	return waBinary.Node{Tag: tag, Content: content}
}

// fetchPreKeys answers a client's request for the bundles of devices it
// has no session with; each one-time prekey is handed out once.
func (s *Server) fetchPreKeys(c *conn, iq *waBinary.Node, key *waBinary.Node) {
	var users []waBinary.Node
	for _, u := range key.GetChildren() {
		jid, _ := u.Attrs["jid"].(types.JID)
		s.mu.Lock()
		b, err := s.bundle(jid)
		s.mu.Unlock()
		if err != nil {
			users = append(users, waBinary.Node{Tag: "user", Attrs: waBinary.Attrs{"jid": jid},
				Content: []waBinary.Node{{Tag: "error", Attrs: waBinary.Attrs{"code": "404", "text": "item-not-found"}}}})
			continue
		}
		users = append(users, b)
	}
	c.send(result(iq, waBinary.Node{Tag: "list", Content: users}))
}

// bundle is a device's prekey bundle as a <user> node; s.mu is held.
func (s *Server) bundle(jid types.JID) (waBinary.Node, error) {
	p, comp := s.device(jid)
	var regID uint32
	var identity [32]byte
	var signed preKeyPub
	var one *preKeyPub
	switch {
	case p == nil:
		return waBinary.Node{}, errNoDevice
	case jid.Device == 0:
		regID, identity = p.regID, *p.identity.Pub
		signed = preKeyPub{id: p.signed.KeyID, pub: *p.signed.Pub, sig: *p.signed.Signature}
		if k := p.takePreKey(); k != nil {
			one = k
		}
	case comp == nil:
		return waBinary.Node{}, errNoDevice
	default:
		regID, identity, signed = comp.reg.regID, comp.reg.identity, comp.reg.signed
		if len(comp.prekeys) > 0 {
			k := comp.prekeys[0]
			comp.prekeys = comp.prekeys[1:]
			one = &k
		}
	}
	var reg [4]byte
	binary.BigEndian.PutUint32(reg[:], regID)
	content := []waBinary.Node{
		{Tag: "registration", Content: reg[:]},
		{Tag: "type", Content: []byte{5}},
		{Tag: "identity", Content: identity[:]},
		preKeyNode("skey", signed, true),
	}
	if one != nil {
		content = append(content, preKeyNode("key", *one, false))
	}
	return waBinary.Node{Tag: "user", Attrs: waBinary.Attrs{"jid": jid}, Content: content}, nil
}

// usync answers device lists (and LIDs) for the users asked about,
// leaving the asking device out of its own list.
func (s *Server) usync(c *conn, comp *companion, iq *waBinary.Node) {
	us := iq.GetChildByTag("usync")
	query := us.GetChildByTag("query")
	wantDevices, wantLID := false, false
	for _, q := range query.GetChildren() {
		switch q.Tag {
		case "devices":
			wantDevices = true
		case "lid":
			wantLID = true
		}
	}
	var users []waBinary.Node
	s.mu.Lock()
	ulist := us.GetChildByTag("list")
	for _, u := range ulist.GetChildren() {
		jid, ok := u.Attrs["jid"].(types.JID)
		if !ok {
			continue
		}
		p := s.phoneOf(jid.ToNonAD())
		var content []waBinary.Node
		if p != nil && wantDevices {
			var list []waBinary.Node
			for _, d := range s.devicesOf(p, jid.Server == types.HiddenUserServer, comp.JID()) {
				attrs := waBinary.Attrs{"id": int(d.Device)}
				if d.Device != 0 {
					attrs["key-index"] = int(p.companions[d.Device].keyIndex)
				}
				list = append(list, waBinary.Node{Tag: "device", Attrs: attrs})
			}
			content = append(content, waBinary.Node{Tag: "devices", Content: []waBinary.Node{{Tag: "device-list", Content: list}}})
		}
		if p != nil && wantLID {
			content = append(content, waBinary.Node{Tag: "lid", Attrs: waBinary.Attrs{"val": p.LID}})
		}
		if p == nil && wantDevices {
			content = append(content, waBinary.Node{Tag: "devices", Content: []waBinary.Node{{Tag: "device-list"}}})
		}
		users = append(users, waBinary.Node{Tag: "user", Attrs: waBinary.Attrs{"jid": jid.ToNonAD()}, Content: content})
	}
	s.mu.Unlock()
	c.send(result(iq, waBinary.Node{Tag: "usync", Attrs: us.Attrs, Content: []waBinary.Node{
		{Tag: "result", Content: []waBinary.Node{{Tag: "devices"}}},
		{Tag: "list", Content: users},
	}}))
}

// activate is the client saying it is ready: WhatsApp's offline queue
// flows, oldest first, then the end of the offline batch.
func (s *Server) activate(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.comp == nil || c.comp.conn != c || c.active {
		return
	}
	c.active = true
	c.startWriter()
	for _, p := range c.comp.pending {
		if p.written {
			s.redelivered++ // a client saw it and did not acknowledge it
		}
		p.written = false
		c.outq.push(outgoing{p.node, p})
	}
	c.outq.push(outgoing{node: waBinary.Node{Tag: "ib", Attrs: waBinary.Attrs{"from": types.ServerJID},
		Content: []waBinary.Node{{Tag: "offline", Attrs: waBinary.Attrs{"count": len(c.comp.pending)}}}}})
	for _, h := range activationHooks {
		go h(s, c.comp) // s.mu is held; hooks take Phone.mu first
	}
}

// activationHooks run each time a companion comes online (history.go: the
// phone's link-time sync).
var activationHooks []func(s *Server, comp *companion)

// deliver queues a stanza for a companion until it acknowledges it,
// sending it now if the companion is online; s.mu is held.
func (s *Server) deliver(comp *companion, class string, n waBinary.Node) {
	if comp.removed {
		return
	}
	id, _ := n.Attrs["id"].(string)
	p := &pendingStanza{class: class, id: id, node: n}
	comp.pending = append(comp.pending, p)
	if comp.conn != nil && comp.conn.active {
		comp.conn.outq.push(outgoing{n, p})
	}
}

// outgoing is a stanza for a connection's writer, with its place in the
// offline queue (nil for what needs no acknowledgement).
type outgoing struct {
	node    waBinary.Node
	pending *pendingStanza
}

// Redelivered counts the stanzas sent again at a login because the client
// had received them but not acknowledged them (it crashed or refused).
func (s *Server) Redelivered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.redelivered
}

// InFlight is how many stanzas a device has received on its current
// connection and not yet acknowledged.
func (s *Server) InFlight(device types.JID) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, comp := s.device(device)
	if comp == nil {
		return 0
	}
	n := 0
	for _, p := range comp.pending {
		if p.written {
			n++
		}
	}
	return n
}

// acknowledged drops a stanza from a companion's offline queue.
func (s *Server) acknowledged(comp *companion, class string, ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		for i, p := range comp.pending {
			if p.id == id && (class == "" || p.class == class) {
				comp.pending = append(comp.pending[:i], comp.pending[i+1:]...)
				break
			}
		}
	}
}

// Pending is how many stanzas wait in the offline queue of a device.
func (s *Server) Pending(device types.JID) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, comp := s.device(device)
	if comp == nil {
		return 0
	}
	return len(comp.pending)
}

// PendingIDs lists the ids of the stanzas waiting in a device's offline
// queue, oldest first.
func (s *Server) PendingIDs(device types.JID) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, comp := s.device(device)
	if comp == nil {
		return nil
	}
	var ids []string
	for _, p := range comp.pending {
		ids = append(ids, p.id)
	}
	return ids
}

func (s *Server) handleClientAck(c *conn, n *waBinary.Node) {
	s.mu.Lock()
	comp := c.comp
	s.mu.Unlock()
	if comp == nil {
		return
	}
	class, _ := n.Attrs["class"].(string)
	id, _ := n.Attrs["id"].(string)
	s.acknowledged(comp, class, id)
}

func (s *Server) handlePresence(c *conn, n *waBinary.Node) {
	s.mu.Lock()
	comp := c.comp
	s.mu.Unlock()
	if comp == nil {
		return
	}
	to, hasTo := n.Attrs["to"].(types.JID)
	if n.Tag == "presence" && !hasTo {
		s.announced(c, n) // the device's own presence (presence.go)
		return
	}
	s.mu.Lock()
	p := s.phoneOf(to.ToNonAD())
	s.mu.Unlock()
	if p != nil {
		p.presences.push(Presence{From: comp.JID(), Node: n})
	}
}

// Presence is a presence or chat state (typing) a client sent to a phone.
type Presence struct {
	From types.JID
	Node *waBinary.Node
}

func (c *conn) startWriter() {
	c.outq = newMailbox[outgoing]()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-c.done
		cancel()
	}()
	go func() {
		for {
			o, err := c.outq.take(ctx)
			if err != nil {
				return
			}
			if err := c.send(o.node); err != nil {
				c.srv.logf("fakewa: send to %v: %v", c.comp.JID(), err)
				c.close()
				return
			}
			if o.pending != nil {
				c.srv.mu.Lock()
				o.pending.written = true
				c.srv.mu.Unlock()
			}
		}
	}()
}

func idsOf(n *waBinary.Node) []string {
	id, _ := n.Attrs["id"].(string)
	ids := []string{id}
	list := n.GetChildByTag("list")
	for _, item := range list.GetChildren() {
		if v, ok := item.Attrs["id"].(string); ok {
			ids = append(ids, v)
		}
	}
	return ids
}

var _ = fmt.Sprint
