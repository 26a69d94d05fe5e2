package whatsapp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
	_ "github.com/phonebridge/phonebridge/connectors/api" // the api connector type
	"github.com/phonebridge/phonebridge/internal/daemontest"
)

// relayRig is a real bridge from a config: the WhatsApp link "me" on the
// fake, linked to Ann's account, and an api connector, with routes
// bob (Bob's chat ↔ API chat bob) and family (the group named Family ↔
// API chat family), and notices to API chat notices.
type relayRig struct {
	b      *bridge.Bridge
	c      *Connector
	wa     *fakeWA
	cl     *fakeClient
	addr   string
	client *daemontest.Client
}

func newRelayRig(t *testing.T) *relayRig {
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t))
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
state_dir: ./state
delivery:
  retry_min: 10ms
  retry_max: 200ms
notices:
  connector: api
  chat: notices
connectors:
  me:
    type: whatsapp
    reconnect_max: 1s
  api:
    type: api
    listen: %s
    token: %s
routes:
  - name: bob
    endpoints:
      - {connector: me, chat: "%s"}
      - {connector: api, chat: bob}
  - name: family
    endpoints:
      - {connector: me, chat: Family}
      - {connector: api, chat: family}
`, addr, daemontest.Token, bobChat)), filepath.Join(dir, "phonebridge.yaml"))
	if err != nil {
		t.Fatal(err)
	}

	// Linked earlier (by `phonebridge link`), on the same database.
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	st, err := bridge.OpenStore(cfg.Store.Path, "normal")
	if err != nil {
		t.Fatal(err)
	}
	first, err := New(bridge.Env{Name: "me", Logger: quietLog(), StateDir: cfg.StateDir, Store: st}, rigOptions())
	if err != nil {
		t.Fatal(err)
	}
	saveDevice(t, first, "+15550001111", "Ann")
	stopWithin(t, first)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	rr := &relayRig{wa: newFakeWA(), addr: addr}
	rr.wa.groups = groupInfos(t, map[string]string{familyGroup: "Family"})
	rr.b, err = bridge.Open(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	l, _ := rr.b.Linker("me")
	rr.c = l.(*Connector)
	rr.c.newClient = rr.wa.newClient
	if err := rr.b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitBound)
		defer cancel()
		if err := rr.b.Stop(ctx); err != nil {
			t.Errorf("stop the bridge: %v", err)
		}
	})
	rr.cl = rr.wa.client(t, 1)
	rr.cl.waitAccepted(t)

	rr.client, err = daemontest.Dial(addr, daemontest.Token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rr.client.Close() })
	for _, chat := range []string{"bob", "family", "notices"} {
		if err := rr.client.Subscribe(chat, -1); err != nil {
			t.Fatal(err)
		}
	}
	return rr
}

// event waits for the next event the API client is delivered.
func (rr *relayRig) event(t *testing.T) daemontest.Frame {
	t.Helper()
	select {
	case f := <-rr.client.Events:
		return f
	case <-rr.client.Closed:
		t.Fatalf("the API connection closed: %v", rr.client.Err())
	case <-time.After(waitBound):
		t.Fatalf("no event reached the API client within %v", waitBound)
	}
	return daemontest.Frame{}
}

// send sends ev from the API client and returns the answer (ack or error).
func (rr *relayRig) send(t *testing.T, ev daemontest.WireEvent) daemontest.Frame {
	t.Helper()
	if err := rr.client.Send(ev.ID, ev); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-rr.client.Acks:
		return f
	case <-time.After(waitBound):
		t.Fatalf("no answer to send %s within %v", ev.ID, waitBound)
	}
	return daemontest.Frame{}
}

// sendOK sends ev and fails unless it is acknowledged.
func (rr *relayRig) sendOK(t *testing.T, ev daemontest.WireEvent) {
	t.Helper()
	if f := rr.send(t, ev); f.Type != "ack" {
		t.Fatalf("send %s: %+v, want an ack", ev.ID, f)
	}
}

// committed reports whether the core has stored WhatsApp message id.
func (rr *relayRig) committed(t *testing.T, chat, id string) bool {
	t.Helper()
	var n int
	err := rr.b.Store().QueryRowContext(context.Background(),
		`SELECT COUNT(*) FROM native_ids WHERE connector = 'me' AND chat = ? AND native_id = ?`, chat, id).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

var apiCarol = &daemontest.WireSender{ID: "apiCarol", Name: "Carol"}

// TestRelayWhatsAppAndAPI relays both ways through the real core: WhatsApp
// messages reach an API client (acknowledged to WhatsApp only once stored,
// once however often WhatsApp delivers them), and the API client's
// messages, replies, edits, deletes and reactions reach WhatsApp with
// their ids rewritten to WhatsApp's.
func TestRelayWhatsAppAndAPI(t *testing.T) {
	rr := newRelayRig(t)
	bob := mustJID(t, bobChat)

	// WhatsApp → API.
	if !rr.cl.deliver(waText(bob, bob, "BOB1", "Bob", "hello from *WhatsApp*")) {
		t.Fatal("the message was not acknowledged")
	}
	if !rr.committed(t, bobChat, "BOB1") {
		t.Fatal("the handler acknowledged the message before the core stored it")
	}
	f := rr.event(t)
	if f.Chat != "bob" || f.Event.Text != "hello from *WhatsApp*" || f.Event.Sender == nil || f.Event.Sender.Name != "Bob" || f.Event.Sender.ID != bobChat {
		t.Fatalf("the API got %+v %+v, want Bob's message", f, f.Event)
	}
	bobOnAPI := f.Event.ID

	// The same message delivered again (WhatsApp redelivers what it did
	// not see acknowledged) is relayed once: next comes the next one.
	if !rr.cl.deliver(waText(bob, bob, "BOB1", "Bob", "hello from *WhatsApp*")) {
		t.Error("a redelivered message was not acknowledged")
	}
	rr.cl.deliver(waText(bob, bob, "BOB2", "Bob", "second"))
	if f := rr.event(t); f.Event.Text != "second" {
		t.Fatalf("after a redelivery the API got %q, want the next message", f.Event.Text)
	}

	// API → WhatsApp: as Ann, with Carol's name in front.
	rr.sendOK(t, daemontest.WireEvent{ID: "api-1", Kind: "message", Chat: "bob", Sender: apiCarol, Text: "hi from the API"})
	sent := rr.wa.sentMessages(t, 1)
	if sent[0].To != bob || sent[0].Msg.GetConversation() != "*Carol*: hi from the API" {
		t.Fatalf("WhatsApp got %v to %s, want Carol's message to Bob", sent[0].Msg, sent[0].To)
	}
	carolOnWA := sent[0].ID

	// A reply to Bob's message quotes it by its WhatsApp id.
	rr.sendOK(t, daemontest.WireEvent{ID: "api-2", Kind: "message", Chat: "bob", Sender: apiCarol, Text: "indeed", ReplyTo: bobOnAPI})
	sent = rr.wa.sentMessages(t, 2)
	if ci := sent[1].Msg.GetExtendedTextMessage().GetContextInfo(); ci.GetStanzaID() != "BOB1" || ci.GetParticipant() != bobChat {
		t.Errorf("the reply went as %v, want it quoting BOB1", sent[1].Msg)
	}

	// Editing and deleting Carol's message act on its WhatsApp copy.
	rr.sendOK(t, daemontest.WireEvent{ID: "api-3", Kind: "edit", Chat: "bob", Sender: apiCarol, Target: "api-1", Text: "hi from the API, edited"})
	sent = rr.wa.sentMessages(t, 3)
	pm := sent[2].Msg.GetEditedMessage().GetMessage().GetProtocolMessage()
	if pm.GetKey().GetID() != carolOnWA || pm.GetEditedMessage().GetConversation() != "*Carol*: hi from the API, edited" {
		t.Errorf("the edit went as %v, want an edit of %s", sent[2].Msg, carolOnWA)
	}
	rr.sendOK(t, daemontest.WireEvent{ID: "api-4", Kind: "reaction", Chat: "bob", Sender: apiCarol, Target: bobOnAPI, Emoji: "👍"})
	sent = rr.wa.sentMessages(t, 4)
	if rm := sent[3].Msg.GetReactionMessage(); rm.GetKey().GetID() != "BOB1" || rm.GetText() != "👍" {
		t.Errorf("the reaction went as %v, want 👍 on BOB1", sent[3].Msg)
	}
	rr.sendOK(t, daemontest.WireEvent{ID: "api-5", Kind: "delete", Chat: "bob", Sender: apiCarol, Target: "api-1"})
	sent = rr.wa.sentMessages(t, 5)
	if pm := sent[4].Msg.GetProtocolMessage(); pm.GetType() != waE2E.ProtocolMessage_REVOKE || pm.GetKey().GetID() != carolOnWA {
		t.Errorf("the delete went as %v, want a revoke of %s", sent[4].Msg, carolOnWA)
	}
	for i, s := range sent {
		if s.To != bob {
			t.Errorf("message %d went to %s, want Bob's chat", i, s.To)
		}
	}
}

// TestRelayMediaToAPI: a WhatsApp photo reaches the API with its bytes,
// downloaded from WhatsApp when the API asks for them.
func TestRelayMediaToAPI(t *testing.T) {
	rr := newRelayRig(t)
	bob := mustJID(t, bobChat)
	photo := []byte("\xff\xd8\xff a small JPEG")
	rr.wa.update(func() { rr.wa.downloads["/v/t62/bob-photo"] = photo })
	msg := waText(bob, bob, "IMG1", "Bob", "")
	msg.Message = &waE2E.Message{ImageMessage: &waE2E.ImageMessage{
		DirectPath: proto.String("/v/t62/bob-photo"), MediaKey: []byte("key"), Mimetype: proto.String("image/jpeg"),
		FileLength: proto.Uint64(uint64(len(photo))), Caption: proto.String("look"),
	}}
	if !rr.cl.deliver(msg) {
		t.Fatal("the photo was not acknowledged")
	}
	if f := rr.event(t); f.Event.Text != "look" {
		t.Fatalf("the API got %+v, want the photo with its caption", f.Event)
	}
	// The API serves attachments by the SHA-256 of their bytes.
	sum := sha256.Sum256(photo)
	req, _ := http.NewRequest(http.MethodGet, "http://"+rr.addr+"/v1/media/"+hex.EncodeToString(sum[:]), nil)
	req.Header.Set("Authorization", "Bearer "+daemontest.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(body) != string(photo) {
		t.Errorf("GET the photo: %d %q, want the bytes WhatsApp had", resp.StatusCode, body)
	}
}

// TestRelayGroupRouteByName: a route naming a WhatsApp group waits for the
// group list, then relays both ways.
func TestRelayGroupRouteByName(t *testing.T) {
	rr := newRelayRig(t)
	// The API's chat has no destination until "Family" resolves, which
	// happens once the link loaded its groups and the core resolved the
	// routes again, in the background: retry until it has.
	rr.wa.waitFor(t, "the group list to be asked for", func() bool { return rr.wa.groupLists > 0 })
	deadline := time.Now().Add(waitBound)
	for n := 0; ; n++ {
		f := rr.send(t, daemontest.WireEvent{ID: fmt.Sprintf("fam-%d", n), Kind: "message", Chat: "family", Sender: apiCarol, Text: "dinner at 8"})
		if f.Type == "ack" {
			break
		}
		if f.Code != "no_route" || time.Now().After(deadline) {
			t.Fatalf("send to family: %+v, want an ack once the group resolves", f)
		}
	}
	sent := rr.wa.sentMessages(t, 1)
	if sent[0].To != mustJID(t, familyGroup) || sent[0].Msg.GetConversation() != "*Carol*: dinner at 8" {
		t.Errorf("WhatsApp got %v to %s, want it in Family", sent[0].Msg, sent[0].To)
	}

	eve := mustJID(t, "15550006666@s.whatsapp.net")
	rr.cl.deliver(waText(mustJID(t, familyGroup), eve, "FAM1", "Eve", "on my way"))
	f := rr.event(t)
	if f.Chat != "family" || f.Event.Text != "on my way" || f.Event.Sender.Name != "Eve" {
		t.Errorf("the API got %+v %+v, want Eve's message in family", f, f.Event)
	}
}

// TestRelayLogoutNotice: the phone removing the device posts the notice
// to the configured notices chat, through the real core.
func TestRelayLogoutNotice(t *testing.T) {
	rr := newRelayRig(t)
	rr.cl.removeFromPhone(t)
	f := rr.event(t)
	want := "WhatsApp link 'me' was logged out from the phone — run `phonebridge link me`"
	if f.Chat != "notices" || f.Event.Text != want {
		t.Errorf("the API got %+v %+v, want the notice %q", f, f.Event, want)
	}
	if st := rr.b.Links(); len(st) != 1 || st[0].State != bridge.LinkLoggedOut {
		t.Errorf("links %+v, want me logged out", st)
	}
}

// TestMessageAcknowledgement: a message is acknowledged to WhatsApp when
// the core stored it or no route wants it, and not when storing failed.
func TestMessageAcknowledgement(t *testing.T) {
	r := newRig(t)
	c := r.linked("me", "+15550001111", "Ann", nil)
	s, cl := r.startConnected(c)
	bob := mustJID(t, bobChat)
	for _, tc := range []struct {
		refuse error
		ack    bool
	}{
		{nil, true},
		{fmt.Errorf("%w: %q", bridge.ErrNoRoute, bobChat), true},
		{errors.New("store the event: disk I/O error"), false},
		{bridge.ErrStoreClosed, false},
	} {
		s.update(func() { s.refuse = tc.refuse })
		if got := cl.deliver(waText(bob, bob, types.MessageID(fmt.Sprint("M", tc.refuse)), "Bob", "hi")); got != tc.ack {
			t.Errorf("core answering %v: acknowledged %v, want %v", tc.refuse, got, tc.ack)
		}
	}
	// Status updates are not relayed unless asked for, and not left
	// for WhatsApp to deliver again either.
	s.update(func() { s.refuse = errors.New("must not be asked") })
	if !cl.deliver(waText(types.StatusBroadcastJID, bob, "STATUS1", "Bob", "my story")) {
		t.Error("a status update was left unacknowledged")
	}
}
