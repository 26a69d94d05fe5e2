package fakewa

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"sort"
	"strings"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
)

// handleClientMessage routes a message a companion sent: each <to> goes to
// its device (a phone decrypts it at once, a companion gets it queued),
// then the server acknowledges it with the participant hash it expected.
func (s *Server) handleClientMessage(c *conn, n *waBinary.Node) {
	s.mu.Lock()
	from := c.comp
	s.mu.Unlock()
	if from == nil {
		return
	}
	id, _ := n.Attrs["id"].(string)
	to, _ := n.Attrs["to"].(types.JID)
	now := s.clock()
	ack := waBinary.Node{Tag: "ack", Attrs: waBinary.Attrs{"class": "message", "id": id, "from": to, "t": now.Unix()}}
	identityNode, hasIdentity := n.GetOptionalChildByTag("device-identity")
	var ident *waBinary.Node
	if hasIdentity {
		ident = &identityNode
	}
	ctx := context.Background()

	if cat, _ := n.Attrs["category"].(string); cat == "peer" {
		// A peer message to the account's own phone.
		enc := n.GetChildByTag("enc")
		s.mu.Lock()
		p := from.phone
		s.mu.Unlock()
		c.send(ack)
		p.receive(ctx, from, n, enc, nil, p.PN, ident)
		return
	}

	isGroup := to.Server == types.GroupServer
	var skmsg *waBinary.Node
	if isGroup {
		for _, e := range n.GetChildrenByTag("enc") {
			if e.Attrs["type"] == "skmsg" {
				e := e
				skmsg = &e
			}
		}
	}
	s.mu.Lock()
	var expected []types.JID
	lidForm := false
	var group *Group
	if isGroup {
		group = s.groups[to]
		if group == nil || !group.has(from.phone) {
			s.mu.Unlock()
			ack.Attrs["error"] = "403"
			c.send(ack)
			return
		}
		lidForm = group.LIDAddressing
		for _, m := range group.members {
			expected = append(expected, s.devicesOf(m, lidForm, from.JID())...)
		}
	} else if peer := s.phoneOf(to.ToNonAD()); peer != nil {
		lidForm = to.Server == types.HiddenUserServer
		expected = append(s.devicesOf(peer, lidForm, from.JID()), s.devicesOf(from.phone, lidForm, from.JID())...)
	} else {
		s.mu.Unlock()
		ack.Attrs["error"] = "404"
		c.send(ack)
		return
	}
	sender := from.JID()
	if lidForm {
		sender = from.LID()
	}
	type phoneDelivery struct {
		p    *Phone
		enc  waBinary.Node
		chat types.JID
	}
	var toPhones []phoneDelivery
	parts := n.GetChildByTag("participants")
	for _, part := range parts.GetChildren() {
		dev, ok := part.Attrs["jid"].(types.JID)
		if !ok || part.Tag != "to" {
			continue
		}
		encs := part.GetChildrenByTag("enc")
		if len(encs) != 1 {
			continue
		}
		p, comp := s.device(dev)
		switch {
		case p == nil:
		case comp == nil && dev.Device == 0:
			chat := to
			if !isGroup {
				if p == from.phone {
					chat = to.ToNonAD() // its own phone: the chat is the peer
				} else {
					chat = from.phone.PN
				}
			}
			toPhones = append(toPhones, phoneDelivery{p, encs[0], chat})
		case comp != nil:
			attrs := waBinary.Attrs{"id": id, "t": now.Unix(), "type": n.Attrs["type"]}
			if isGroup {
				attrs["from"], attrs["participant"] = to, sender
				if lidForm {
					attrs["addressing_mode"], attrs["participant_pn"] = "lid", from.JID()
				} else {
					attrs["participant_lid"] = from.LID()
				}
			} else {
				attrs["from"] = sender
				if p == from.phone {
					attrs["recipient"] = to.ToNonAD()
				} else if lidForm {
					attrs["sender_pn"] = from.JID()
				} else {
					attrs["sender_lid"] = from.LID()
				}
			}
			if p != from.phone {
				attrs["notify"] = from.phone.PushName
			}
			content := []waBinary.Node{encs[0]}
			if skmsg != nil {
				content = append(content, *skmsg)
			}
			if ident != nil {
				content = append(content, *ident)
			}
			s.deliver(comp, "message", waBinary.Node{Tag: "message", Attrs: attrs, Content: content})
		}
	}
	// Devices with a sender key already get only the skmsg.
	if isGroup && skmsg != nil {
		listed := map[types.JID]bool{}
		for _, part := range parts.GetChildren() {
			if dev, ok := part.Attrs["jid"].(types.JID); ok {
				listed[dev] = true
			}
		}
		for _, dev := range expected {
			if listed[dev] {
				continue
			}
			p, comp := s.device(dev)
			if p == nil {
				continue
			}
			if comp == nil {
				toPhones = append(toPhones, phoneDelivery{p, waBinary.Node{}, to})
				continue
			}
			attrs := waBinary.Attrs{"id": id, "t": now.Unix(), "type": n.Attrs["type"], "from": to, "participant": sender, "notify": from.phone.PushName}
			if lidForm {
				attrs["addressing_mode"], attrs["participant_pn"] = "lid", from.JID()
			} else {
				attrs["participant_lid"] = from.LID()
			}
			s.deliver(comp, "message", waBinary.Node{Tag: "message", Attrs: attrs, Content: []waBinary.Node{*skmsg}})
		}
	}
	s.mu.Unlock()
	ack.Attrs["phash"] = participantHash(expected)
	c.send(ack)
	for _, d := range toPhones {
		if d.enc.Tag == "" {
			d.p.receiveSK(ctx, from, n, *skmsg, d.chat)
			continue
		}
		d.p.receive(ctx, from, n, d.enc, skmsg, d.chat, ident)
	}
}

// receiveSK is a group message for a phone that already has the sender's
// key: only the skmsg.
func (p *Phone) receiveSK(ctx context.Context, from *companion, stanza *waBinary.Node, skmsg waBinary.Node, chat types.JID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id, _ := stanza.Attrs["id"].(string)
	msg, err := p.decryptGroup(ctx, from, chat, skmsg)
	p.inbox.push(Message{ID: id, From: from.JID(), FromMe: from.phone == p, Time: p.srv.clock(), Node: stanza, Chat: chat, Msg: msg, Err: err})
}

// participantHash is WhatsApp's hash of the devices a message should
// reach; the client compares it with its own list.
func participantHash(devs []types.JID) string {
	strs := make([]string, len(devs))
	for i, d := range devs {
		strs[i] = d.ADString()
	}
	sort.Strings(strs)
	h := sha256.Sum256([]byte(strings.Join(strs, "")))
	return "2:" + base64.RawStdEncoding.EncodeToString(h[:6])
}

// handleClientReceipt routes a client's receipt to the account it names,
// treats it as the acknowledgement of the stanza it answers, and acks it.
func (s *Server) handleClientReceipt(c *conn, n *waBinary.Node) {
	s.mu.Lock()
	from := c.comp
	s.mu.Unlock()
	if from == nil {
		return
	}
	typ, _ := n.Attrs["type"].(string)
	to, _ := n.Attrs["to"].(types.JID)
	ids := idsOf(n)
	// Any answer to a message, even a retry request, ends its stay in the
	// offline queue: WhatsApp does not send it again.
	s.acknowledged(from, "message", ids...)
	ack := waBinary.Node{Tag: "ack", Attrs: waBinary.Attrs{"class": "receipt", "id": ids[0], "from": to}}
	if typ != "" {
		ack.Attrs["type"] = typ
	}
	c.send(ack)
	s.mu.Lock()
	var target *Phone
	if to.Server == types.GroupServer {
		if part, ok := n.Attrs["participant"].(types.JID); ok {
			target = s.phoneOf(part.ToNonAD())
		}
	} else {
		target = s.phoneOf(to.ToNonAD())
	}
	s.mu.Unlock()
	if target == nil {
		return
	}
	switch typ {
	case "retry":
		go target.onRetry(context.Background(), from, n)
	case "hist_sync", "peer_msg", "sender":
		// Acknowledgements among the account's own devices.
	}
	target.receipts.push(Receipt{From: from.JID(), Type: typ, IDs: ids, Node: n})
}

var _ = fmt.Sprint
