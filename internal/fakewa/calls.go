package fakewa

import (
	"fmt"

	waBinary "go.mau.fi/whatsmeow/binary"
)

// What WhatsApp gives linked devices instead of the real thing: calls
// ring only on phones, and view-once media stays on them.

// Call rings to's account from p as WhatsApp does: to's linked devices
// each get a <call> offer (the phone would ring). It returns the call id.
func (p *Phone) Call(to *Phone, video bool) string {
	id := NewMessageID()
	media := waBinary.Node{Tag: "audio", Attrs: waBinary.Attrs{"enc": "opus", "rate": "16000"}}
	if video {
		media = waBinary.Node{Tag: "video", Attrs: waBinary.Attrs{"enc": "vp8"}}
	}
	p.callStanza(to, p, waBinary.Node{Tag: "offer", Attrs: waBinary.Attrs{"call-id": id, "call-creator": p.PN}, Content: []waBinary.Node{media}})
	return id
}

// EndCall ends the call id that p placed to to's account (p hung up, or
// it rang out: reason "timeout"), as WhatsApp tells to's linked devices
// with a <terminate>; after AnswerCall it is the end of a talk.
func (p *Phone) EndCall(to *Phone, id, reason string) {
	attrs := waBinary.Attrs{"call-id": id, "call-creator": p.PN}
	if reason != "" {
		attrs["reason"] = reason
	}
	p.callStanza(to, p, waBinary.Node{Tag: "terminate", Attrs: attrs})
}

// AnswerCall has p's phone take the call id from caller: p's linked
// devices get an <accept> for it, as WhatsApp tells them the call was
// answered on another device.
func (p *Phone) AnswerCall(caller *Phone, id string) {
	p.callStanza(p, p, waBinary.Node{Tag: "accept", Attrs: waBinary.Attrs{"call-id": id, "call-creator": caller.PN}})
}

// callStanza delivers a <call> from from, holding child, to to's linked
// devices.
func (p *Phone) callStanza(to, from *Phone, child waBinary.Node) {
	s := p.srv
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, comp := range liveCompanions(to) {
		s.deliver(comp, "call", waBinary.Node{Tag: "call", Attrs: waBinary.Attrs{
			"id": NewMessageID(), "from": from.PN, "t": s.clock().Unix(), "platform": from.platform(), "version": "2.24.1",
		}, Content: []waBinary.Node{child}})
	}
}

// SendViewOnce sends to a view-once photo from p: to's phone has it,
// and its linked devices get only word that one came (an <unavailable
// type="view_once"> message), as WhatsApp does. It returns the id.
func (p *Phone) SendViewOnce(to *Phone) (string, error) {
	if to == p {
		return "", fmt.Errorf("a view-once message to oneself")
	}
	id := NewMessageID()
	s := p.srv
	s.mu.Lock()
	at := s.clock()
	s.mu.Unlock()
	to.inbox.push(Message{ID: id, Chat: p.PN, From: p.PN, Time: at})
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, comp := range liveCompanions(to) {
		attrs := waBinary.Attrs{"id": id, "t": at.Unix(), "type": "media", "notify": p.PushName}
		p.senderAttrs(attrs)
		s.deliver(comp, "message", waBinary.Node{Tag: "message", Attrs: attrs,
			Content: []waBinary.Node{{Tag: "unavailable", Attrs: waBinary.Attrs{"type": "view_once"}}}})
	}
	return id, nil
}

// platform is what the phone says it runs, for call stanzas.
func (p *Phone) platform() string {
	if p.Platform != "" {
		return p.Platform
	}
	return "android"
}
