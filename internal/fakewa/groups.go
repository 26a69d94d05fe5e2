package fakewa

import (
	"context"
	"fmt"
	"time"

	"go.mau.fi/libsignal/groups"
	"go.mau.fi/libsignal/protocol"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"
)

// Group is a WhatsApp group the fake serves.
type Group struct {
	JID     types.JID
	Subject string
	Topic   string
	// LIDAddressing makes it a LID group (addressing_mode=lid), as new
	// groups are.
	LIDAddressing bool
	Created       time.Time
	Creator       *Phone

	members []*Phone // guarded by the server's mu
	admins  map[*Phone]bool
}

func (g *Group) has(p *Phone) bool {
	for _, m := range g.members {
		if m == p {
			return true
		}
	}
	return false
}

// NewGroup makes a group with its members (the first is its creator and
// admin). id is the user part ("120363000000000001").
func (s *Server) NewGroup(id, subject string, members ...*Phone) *Group {
	g := &Group{
		JID: types.NewJID(id, types.GroupServer), Subject: subject, LIDAddressing: s.opts.LIDAddressing,
		Created: s.clock().Add(-24 * time.Hour), members: members, admins: map[*Phone]bool{},
	}
	if len(members) > 0 {
		g.Creator = members[0]
		g.admins[members[0]] = true
	}
	s.mu.Lock()
	s.groups[g.JID] = g
	s.mu.Unlock()
	return g
}

// groupNode is the <group> element of group info answers; s.mu is held.
func (s *Server) groupNode(g *Group) waBinary.Node {
	attrs := waBinary.Attrs{
		"id": g.JID.User, "subject": g.Subject, "s_t": g.Created.Unix(), "creation": g.Created.Unix(), "size": len(g.members),
	}
	if g.Creator != nil {
		attrs["creator"], attrs["s_o"] = s.addressOf(g, g.Creator), s.addressOf(g, g.Creator)
	}
	if g.LIDAddressing {
		attrs["addressing_mode"] = "lid"
	}
	var content []waBinary.Node
	for _, m := range g.members {
		pa := waBinary.Attrs{"jid": s.addressOf(g, m)}
		if g.LIDAddressing {
			if !m.numberHidden.Load() {
				pa["phone_number"] = m.PN
			}
		} else {
			pa["lid"] = m.LID
		}
		if g.admins[m] {
			pa["type"] = "admin"
			if m == g.Creator {
				pa["type"] = "superadmin"
			}
		}
		content = append(content, waBinary.Node{Tag: "participant", Attrs: pa})
	}
	if g.Topic != "" {
		content = append(content, waBinary.Node{Tag: "description", Attrs: waBinary.Attrs{"id": "TOPIC1", "t": g.Created.Unix()},
			Content: []waBinary.Node{{Tag: "body", Content: []byte(g.Topic)}}})
	}
	return waBinary.Node{Tag: "group", Attrs: attrs, Content: content}
}

// addressOf is how a member is named in a group: its LID in a LID group.
func (s *Server) addressOf(g *Group, p *Phone) types.JID {
	if g.LIDAddressing {
		return p.LID
	}
	return p.PN
}

func init() {
	iqHandlers = append(iqHandlers, groupIQ)
}

func groupIQ(s *Server, c *conn, comp *companion, iq *waBinary.Node, xmlns, typ string, first waBinary.Node) bool {
	if xmlns != "w:g2" || typ != "get" {
		return false
	}
	to, _ := iq.Attrs["to"].(types.JID)
	switch first.Tag {
	case "query":
		s.mu.Lock()
		g := s.groups[to]
		var n waBinary.Node
		member := g != nil && g.has(comp.phone)
		if member {
			n = s.groupNode(g)
		}
		s.mu.Unlock()
		switch {
		case g == nil:
			c.send(iqError(iq, 404, "item-not-found"))
		case !member:
			c.send(iqError(iq, 403, "forbidden"))
		default:
			c.send(result(iq, n))
		}
		return true
	case "participating":
		s.mu.Lock()
		var list []waBinary.Node
		for _, g := range s.groups {
			if g.has(comp.phone) {
				list = append(list, s.groupNode(g))
			}
		}
		s.mu.Unlock()
		c.send(result(iq, waBinary.Node{Tag: "groups", Content: list}))
		return true
	}
	return false
}

// sendGroup sends a group message from the phone: the other phones get it
// in the clear, every companion of every member the skmsg, with the
// sender key distribution first to those that lack it; p.mu is held.
func (p *Phone) sendGroup(ctx context.Context, gid types.JID, id string, msg *waE2E.Message, at time.Time, only *companion, retry int) error {
	s := p.srv
	s.mu.Lock()
	g := s.groups[gid]
	if g == nil || !g.has(p) {
		s.mu.Unlock()
		return fmt.Errorf("%s is not a member of %s", p.PN, gid)
	}
	members := append([]*Phone(nil), g.members...)
	lidForm := g.LIDAddressing
	s.mu.Unlock()
	return p.sendSenderKeyed(ctx, gid, members, lidForm, id, msg, at, only, retry)
}

// sendSenderKeyed sends msg from the phone to the companions of members
// (and the other phones, in the clear) under its sender key for chat gid
// (a group, or status@broadcast), with the sender key distribution first
// to those that lack it; p.mu is held.
func (p *Phone) sendSenderKeyed(ctx context.Context, gid types.JID, members []*Phone, lidForm bool, id string, msg *waE2E.Message, at time.Time, only *companion, retry int) error {
	s := p.srv
	s.mu.Lock()
	var comps []*companion
	for _, m := range members {
		comps = append(comps, liveCompanions(m)...)
	}
	s.mu.Unlock()

	plain, err := proto.Marshal(msg)
	if err != nil {
		return err
	}
	name := protocol.NewSenderKeyName(gid.String(), p.PN.SignalAddress())
	builder := groups.NewGroupSessionBuilder(p.store, ser)
	skdm, err := builder.Create(ctx, name)
	if err != nil {
		return err
	}
	skdmMsg, err := proto.Marshal(&waE2E.Message{SenderKeyDistributionMessage: &waE2E.SenderKeyDistributionMessage{
		GroupID: proto.String(gid.String()), AxolotlSenderKeyDistributionMessage: skdm.Serialize(),
	}})
	if err != nil {
		return err
	}
	ct, err := groups.NewGroupCipher(builder, name, p.store).Encrypt(ctx, pad(plain))
	if err != nil {
		return err
	}
	sk := waBinary.Node{Tag: "enc", Attrs: waBinary.Attrs{"v": "2", "type": "skmsg"}, Content: ct.SignedSerialize()}
	if only == nil {
		for _, m := range members {
			if m != p {
				m.inbox.push(Message{ID: id, Chat: gid, From: p.PN, Time: at, Msg: msg})
			}
		}
	}
	have := p.skSent[gid]
	if have == nil {
		have = map[types.JID]bool{}
		p.skSent[gid] = have
	}
	for _, comp := range comps {
		if only != nil && comp != only {
			continue
		}
		content := []waBinary.Node{}
		if !have[comp.JID()] || retry > 0 {
			enc, err := p.encryptFor(ctx, comp, skdmMsg, retry > 0)
			if err != nil {
				return err
			}
			if retry > 0 {
				enc.Attrs["count"] = retry
			}
			content = append(content, enc)
			have[comp.JID()] = true
		}
		content = append(content, sk)
		attrs := waBinary.Attrs{"id": id, "t": at.Unix(), "type": msgType(msg), "from": gid}
		if lidForm {
			attrs["participant"], attrs["addressing_mode"] = p.LID, "lid"
			if !p.numberHidden.Load() {
				attrs["participant_pn"] = p.PN
			}
		} else {
			attrs["participant"], attrs["participant_lid"] = p.PN, p.LID
		}
		if comp.phone != p {
			attrs["notify"] = p.PushName
		}
		s.mu.Lock()
		s.deliver(comp, "message", waBinary.Node{Tag: "message", Attrs: attrs, Content: content})
		s.mu.Unlock()
	}
	return nil
}
