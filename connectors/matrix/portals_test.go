package matrix

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/png"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/testservers"
)

// hsWait bounds each wait on the homeserver; Dendrite backs off 2 s
// before it retries a failed transaction.
const hsWait = 30 * time.Second

// recorder keeps what the transaction handler was given.
type recorder struct {
	mu      sync.Mutex
	seen    []recorded
	changed chan struct{} // closed and replaced on every transaction
	// failOnce makes the handler fail the first transaction holding a
	// message with this body.
	failOnce string
}

type recorded struct {
	txnID  string
	event  *event.Event
	failed bool
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) handle(_ context.Context, txnID string, events []*event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	fail := false
	if r.failOnce != "" {
		for _, e := range events {
			if m := e.Content.AsMessage(); e.Type == event.EventMessage && m.Body == r.failOnce {
				fail = true
				r.failOnce = ""
			}
		}
	}
	for _, e := range events {
		r.seen = append(r.seen, recorded{txnID, e, fail})
	}
	close(r.changed)
	r.changed = make(chan struct{})
	if fail {
		return errNotApplied
	}
	return nil
}

var errNotApplied = errors.New("not applied on purpose")

// waitFor returns the handled events matching pred once there are n.
func (r *recorder) waitFor(t *testing.T, n int, what string, pred func(recorded) bool) []recorded {
	t.Helper()
	deadline := time.After(hsWait)
	for {
		r.mu.Lock()
		var match []recorded
		for _, s := range r.seen {
			if pred(s) {
				match = append(match, s)
			}
		}
		changed := r.changed
		r.mu.Unlock()
		if len(match) >= n {
			return match
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("the handler did not get %s within %v (got %d)", what, hsWait, len(match))
		}
	}
}

func (r *recorder) count(pred func(recorded) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.seen {
		if pred(s) {
			n++
		}
	}
	return n
}

func isMessage(room id.RoomID, sender id.UserID, body string) func(recorded) bool {
	return func(s recorded) bool {
		m := s.event.Content.AsMessage()
		return s.event.RoomID == room && s.event.Sender == sender && s.event.Type == event.EventMessage && m.Body == body
	}
}

// countingTransport counts the requests the bridge makes.
type countingTransport struct {
	n  atomic.Int64
	rt http.RoundTripper
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.rt.RoundTrip(r)
}

// awaitTimeline long-polls /sync as cli until an event in room matches.
func awaitTimeline(t *testing.T, cli *mautrix.Client, room id.RoomID, what string, pred func(*event.Event) bool) *event.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hsWait)
	defer cancel()
	since := ""
	for {
		resp, err := cli.SyncRequest(ctx, 1000, since, "", false, event.PresenceOffline)
		if err != nil {
			t.Fatalf("%s did not see %s: %v", cli.UserID, what, err)
		}
		if jr := resp.Rooms.Join[room]; jr != nil {
			for _, e := range jr.Timeline.Events {
				e.Type.Class = event.MessageEventType
				if e.StateKey != nil {
					e.Type.Class = event.StateEventType
				}
				_ = e.Content.ParseRaw(e.Type)
				if pred(e) {
					return e
				}
			}
		}
		since = resp.NextBatch
	}
}

// TestAppserviceDendrite runs the appservice plumbing against a real
// Dendrite that loads the registration file WriteRegistration wrote.
func TestAppserviceDendrite(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	regPath := filepath.Join(dir, "registration.yaml")
	o := NewOptions()
	o.Homeserver = "http://127.0.0.1:1" // replaced once Dendrite runs
	o.Domain = "localhost"
	o.Owner = "@owner:localhost"
	o.Listen = "127.0.0.1:0"
	o.URL = "http://127.0.0.1:1" // replaced once the server listens
	if _, err := WriteRegistration("mx", o, regPath); err != nil {
		t.Fatal(err)
	}
	reg, _, err := loadRegistration("mx", o, regPath)
	if err != nil {
		t.Fatal(err)
	}
	store := openTestStore(t)
	b := newTestASBridge(t, "mx", store, o, reg)
	counter := &countingTransport{rt: http.DefaultTransport}
	b.http.Transport = counter
	rec := newRecorder()
	srv := b.newServer(rec.handle)
	if err := srv.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.stop(context.Background()) })
	o.URL = "http://" + srv.addr().String()
	if res, err := WriteRegistration("mx", o, regPath); err != nil || len(res.Changes) != 1 {
		t.Fatalf("updating the url: %+v, %v", res, err)
	}

	hs := testservers.StartDendrite(t, testservers.DendriteOptions{AppServiceFiles: []string{regPath}})
	o.Homeserver = hs.URL()
	ownerID, ownerToken := hs.Register(t, "owner", "owner-password", false)
	if ownerID != o.Owner {
		t.Fatalf("owner is %s, want %s", ownerID, o.Owner)
	}
	owner, err := mautrix.NewClient(hs.URL(), id.UserID(ownerID), ownerToken)
	if err != nil {
		t.Fatal(err)
	}
	strangerID, strangerToken := hs.Register(t, "stranger", "stranger-password", false)
	stranger, _ := mautrix.NewClient(hs.URL(), id.UserID(strangerID), strangerToken)

	// The homeserver knows the bot as the registration's sender.
	who, err := b.botIntent().Whoami(ctx)
	if err != nil || who.UserID != id.UserID("@phonebridgebot:localhost") {
		t.Fatalf("the bot is %v (%v), want @phonebridgebot:localhost", who, err)
	}

	// A portal: a private room named after the chat, the owner invited
	// as an admin.
	group := bridge.ChatRef{Connector: "wa", ID: "120363@g.us", Name: "Family"}
	room, err := b.ensurePortal(ctx, group, portalInfo{Name: "Family", Topic: "The family group"})
	if err != nil {
		t.Fatal(err)
	}
	if again, err := b.ensurePortal(ctx, group, portalInfo{Name: "Family"}); err != nil || again != room {
		t.Fatalf("ensurePortal again = %s, %v; want %s", again, err, room)
	}
	if _, err := owner.JoinRoomByID(ctx, room); err != nil {
		t.Fatalf("the owner cannot join the portal they were invited to: %v", err)
	}
	if _, err := stranger.JoinRoomByID(ctx, room); err == nil {
		t.Error("a stranger joined the portal uninvited")
	}
	var name event.RoomNameEventContent
	var topic event.TopicEventContent
	var pl event.PowerLevelsEventContent
	var rules event.JoinRulesEventContent
	for typ, into := range map[event.Type]any{event.StateRoomName: &name, event.StateTopic: &topic, event.StatePowerLevels: &pl, event.StateJoinRules: &rules} {
		if err := owner.StateEvent(ctx, room, typ, "", into); err != nil {
			t.Fatalf("the owner cannot read %s: %v", typ.Type, err)
		}
	}
	if name.Name != "Family" || topic.Topic != "The family group" || rules.JoinRule != event.JoinRuleInvite {
		t.Errorf("name %q, topic %q, join rule %q", name.Name, topic.Topic, rules.JoinRule)
	}
	if p := pl.GetUserLevel(id.UserID(ownerID)); p != 100 {
		t.Errorf("the owner's power level is %d, want 100", p)
	}
	if p := pl.GetUserLevel(b.bot); p != 100 {
		t.Errorf("the bot's power level is %d, want 100", p)
	}
	if origin, direct, ok, err := b.portalOrigin(ctx, room); err != nil || !ok || direct || origin.Connector != "wa" || origin.ID != group.ID || origin.Name != "Family" {
		t.Errorf("portalOrigin = %+v, %v, %v, %v", origin, direct, ok, err)
	}
	if _, _, ok, err := b.portalOrigin(ctx, "!unknown:localhost"); ok || err != nil {
		t.Errorf("portalOrigin of a foreign room = %v, %v", ok, err)
	}

	// A crash after the room was made and before it was recorded: the
	// chat is still pending, and the next call adopts the room it made.
	lost := bridge.ChatRef{Connector: "wa", ID: "120364@g.us"}
	if err := b.store.Write(ctx, func(tx *bridge.Tx) error {
		_, err := tx.Exec(`INSERT INTO matrix_portals_pending (connector, origin_connector, origin_chat) VALUES (?, ?, ?)`, b.name, lost.Connector, lost.ID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	orphan, err := b.botIntent().CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", CreationContent: map[string]any{portalMarker: portalMarkerValue(b.name, lost)}})
	if err != nil {
		t.Fatal(err)
	}
	if adopted, err := b.ensurePortal(ctx, lost, portalInfo{Name: "Lost", Topic: "found again"}); err != nil || adopted != orphan.RoomID {
		t.Errorf("after a crash ensurePortal = %s, %v; want the room made before it, %s", adopted, err, orphan.RoomID)
	}
	// The crash cut the room's making short (the homeserver names a room
	// and invites after creating it): the adopted room gets what it missed.
	var invited event.MemberEventContent
	var lostName event.RoomNameEventContent
	var lostTopic event.TopicEventContent
	if err := b.botIntent().StateEvent(ctx, orphan.RoomID, event.StateMember, ownerID, &invited); err != nil || invited.Membership != event.MembershipInvite {
		t.Errorf("the owner's membership in the adopted portal: %+v, %v; want invited", invited, err)
	}
	if err := b.botIntent().StateEvent(ctx, orphan.RoomID, event.StateRoomName, "", &lostName); err != nil || lostName.Name != "Lost" {
		t.Errorf("the adopted portal is named %q (%v), want Lost", lostName.Name, err)
	}
	if err := b.botIntent().StateEvent(ctx, orphan.RoomID, event.StateTopic, "", &lostTopic); err != nil || lostTopic.Topic != "found again" {
		t.Errorf("the adopted portal's topic is %q (%v)", lostTopic.Topic, err)
	}
	var pending int
	if err := b.store.QueryRowContext(ctx, `SELECT COUNT(*) FROM matrix_portals_pending`).Scan(&pending); err != nil || pending != 0 {
		t.Errorf("%d portals still pending (%v), want none", pending, err)
	}

	// Concurrent calls for one chat make one room; a direct chat's invite
	// says so.
	dm := bridge.ChatRef{Connector: "wa", ID: "15551234567@s.whatsapp.net"}
	rooms := make([]id.RoomID, 6)
	var wg sync.WaitGroup
	for i := range rooms {
		wg.Go(func() {
			r, err := b.ensurePortal(ctx, dm, portalInfo{Name: "Alice", Direct: true})
			if err != nil {
				t.Error(err)
			}
			rooms[i] = r
		})
	}
	wg.Wait()
	if rooms[0] == "" || slices.ContainsFunc(rooms, func(r id.RoomID) bool { return r != rooms[0] }) {
		t.Fatalf("concurrent ensurePortal gave rooms %v, want one", rooms)
	}
	joined, err := b.botIntent().JoinedRooms(ctx)
	if err != nil || len(joined.JoinedRooms) != 3 {
		t.Fatalf("the bot is in %v (%v), want 3 rooms (the group's, the adopted one, the direct chat's)", joined, err)
	}
	var member event.MemberEventContent
	if err := b.botIntent().StateEvent(ctx, rooms[0], event.StateMember, ownerID, &member); err != nil || member.Membership != event.MembershipInvite || !member.IsDirect {
		t.Errorf("the owner's membership in the direct portal: %+v, %v; want a direct invite", member, err)
	}

	// The homeserver pushes what the owner says in a portal.
	if _, err := owner.SendText(ctx, room, "hello from matrix"); err != nil {
		t.Fatal(err)
	}
	got := rec.waitFor(t, 1, "the owner's message", isMessage(room, id.UserID(ownerID), "hello from matrix"))
	if got[0].event.ID == "" || got[0].txnID == "" {
		t.Errorf("the event or its transaction has no id: %+v", got[0])
	}

	// A failed transaction is sent again by the homeserver, and applied.
	rec.mu.Lock()
	rec.failOnce = "fail once"
	rec.mu.Unlock()
	if _, err := owner.SendText(ctx, room, "fail once"); err != nil {
		t.Fatal(err)
	}
	tries := rec.waitFor(t, 2, "the retried transaction", isMessage(room, id.UserID(ownerID), "fail once"))
	if !tries[0].failed || tries[1].failed || tries[0].event.ID != tries[1].event.ID {
		t.Errorf("tries: %+v, want a failure then the same event applied", tries)
	}
	if tries[0].txnID != tries[1].txnID {
		t.Logf("the retry came as transaction %s, the first try as %s", tries[1].txnID, tries[0].txnID)
	}

	// A wrong hs_token is refused, and a retried transaction id is
	// applied once, over the same server the homeserver uses.
	base := "http://" + srv.addr().String()
	body := `{"events":[{"type":"m.room.message","event_id":"$direct","room_id":"` + string(room) + `","sender":"` + ownerID + `","origin_server_ts":1,"content":{"msgtype":"m.text","body":"direct"}}]}`
	if r := call(t, "PUT", base+"/_matrix/app/v1/transactions/direct-1", reg.AppToken, body); r.status != 403 || r.errcode != "M_FORBIDDEN" {
		t.Errorf("wrong hs_token: %d %s", r.status, r.body)
	}
	for range 2 {
		if r := call(t, "PUT", base+"/_matrix/app/v1/transactions/direct-1", reg.ServerToken, body); r.status != 200 {
			t.Errorf("txn direct-1: %d %s", r.status, r.body)
		}
	}
	if n := rec.count(func(s recorded) bool { return s.event.ID == "$direct" }); n != 1 {
		t.Errorf("txn direct-1 applied %d times, want once", n)
	}

	// A ghost: registered, named after the contact, joined to the
	// portal, and what it says is seen as said by it.
	ghost := b.ghostID("15551234567@s.whatsapp.net")
	if err := b.ensureGhost(ctx, ghost, "Alice"); err != nil {
		t.Fatal(err)
	}
	if dn, err := owner.GetDisplayName(ctx, ghost); err != nil || dn.DisplayName != "Alice (WhatsApp)" {
		t.Errorf("the ghost's display name is %+v (%v), want Alice (WhatsApp)", dn, err)
	}
	before := counter.n.Load()
	if err := b.ensureGhost(ctx, ghost, "Alice"); err != nil {
		t.Fatal(err)
	}
	if n := counter.n.Load() - before; n != 0 {
		t.Errorf("ensureGhost of a known ghost made %d requests, want none", n)
	}
	if err := b.ensureGhost(ctx, ghost, "Alice B"); err != nil {
		t.Fatal(err)
	}
	if dn, err := owner.GetDisplayName(ctx, ghost); err != nil || dn.DisplayName != "Alice B (WhatsApp)" {
		t.Errorf("after a rename the ghost's display name is %+v (%v)", dn, err)
	}
	// A ghost registered before the table knew it (a lost database) is
	// fine: M_USER_IN_USE.
	b2 := newTestASBridge(t, "mx-other", store, o, reg)
	if err := b2.ensureGhost(ctx, ghost, ""); err != nil {
		t.Errorf("ensureGhost of a ghost registered elsewhere: %v", err)
	}
	if err := b.ensureGhost(ctx, "@alice:localhost", "x"); !bridge.IsPermanent(err) {
		t.Errorf("ensureGhost of a non-ghost = %v, want a permanent error", err)
	}

	if err := b.joinGhost(ctx, ghost, room); err != nil {
		t.Fatal(err)
	}
	members, err := owner.JoinedMembers(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	if _, in := members.Joined[ghost]; !in {
		t.Errorf("the ghost is not among the portal's members %v", members.Joined)
	}
	before = counter.n.Load()
	if err := b.joinGhost(ctx, ghost, room); err != nil {
		t.Fatal(err)
	}
	if n := counter.n.Load() - before; n != 0 {
		t.Errorf("joinGhost of a member made %d requests, want none", n)
	}
	if _, err := b.intent(ghost).SendText(ctx, room, "hello from whatsapp"); err != nil {
		t.Fatal(err)
	}
	seen := awaitTimeline(t, owner, room, "the ghost's message", func(e *event.Event) bool {
		m := e.Content.AsMessage()
		return e.Type == event.EventMessage && m.Body == "hello from whatsapp"
	})
	if seen.Sender != ghost {
		t.Errorf("the owner sees the ghost's message from %s, want %s", seen.Sender, ghost)
	}
	// The echo comes back from a bridge user, which the appservice API
	// answers without handing it on (onlyEchoes).
	if !b.isBridgeUser(seen.Sender) || b.allowed(seen.Sender) {
		t.Errorf("the echo's sender %s is not recognised as the bridge's", seen.Sender)
	}

	// Renaming the chat renames the portal, once.
	if err := b.syncPortal(ctx, group, portalInfo{Name: "Family 2"}); err != nil {
		t.Fatal(err)
	}
	if err := owner.StateEvent(ctx, room, event.StateRoomName, "", &name); err != nil || name.Name != "Family 2" {
		t.Errorf("after syncPortal the name is %q (%v)", name.Name, err)
	}
	before = counter.n.Load()
	if err := b.syncPortal(ctx, group, portalInfo{Name: "Family 2"}); err != nil {
		t.Fatal(err)
	}
	if err := b.syncPortal(ctx, bridge.ChatRef{Connector: "wa", ID: "no-portal"}, portalInfo{Name: "x", Described: true, Topic: "y"}); err != nil {
		t.Fatal(err)
	}
	if n := counter.n.Load() - before; n != 0 {
		t.Errorf("syncPortal without a change made %d requests, want none", n)
	}
	if origin, _, _, _ := b.portalOrigin(ctx, room); origin.Name != "Family 2" {
		t.Errorf("portalOrigin's name is %q after the rename", origin.Name)
	}

	// The chat's topic and picture follow the origin's description, each
	// sent once; an origin that did not answer changes neither.
	picture := grayPNG(t, 4)
	described := portalInfo{Name: "Family 2", Topic: "Weekend plans", Described: true, AvatarID: "pic-1", Avatar: memMedia("image/png", picture)}
	if err := b.syncPortal(ctx, group, described); err != nil {
		t.Fatal(err)
	}
	var avatar event.RoomAvatarEventContent
	if err := owner.StateEvent(ctx, room, event.StateTopic, "", &topic); err != nil || topic.Topic != "Weekend plans" {
		t.Errorf("after syncPortal the topic is %q (%v)", topic.Topic, err)
	}
	if err := owner.StateEvent(ctx, room, event.StateRoomAvatar, "", &avatar); err != nil {
		t.Fatal(err)
	}
	if got := download(t, owner, avatar.URL); !bytes.Equal(got, picture) {
		t.Errorf("the portal's picture is %d bytes, not the chat's %d", len(got), len(picture))
	}
	before = counter.n.Load()
	if err := b.syncPortal(ctx, group, described); err != nil {
		t.Fatal(err)
	}
	if err := b.syncPortal(ctx, group, portalInfo{Name: "Family 2"}); err != nil {
		t.Fatal(err)
	}
	if n := counter.n.Load() - before; n != 0 {
		t.Errorf("syncPortal with the same or no description made %d requests, want none", n)
	}
	if err := b.syncPortal(ctx, group, portalInfo{Name: "Family 2", Described: true}); err != nil {
		t.Fatal(err)
	}
	avatar, topic = event.RoomAvatarEventContent{}, event.TopicEventContent{}
	if err := owner.StateEvent(ctx, room, event.StateRoomAvatar, "", &avatar); err != nil || avatar.URL != "" {
		t.Errorf("after the chat's picture was removed the portal's is %q (%v)", avatar.URL, err)
	}
	if err := owner.StateEvent(ctx, room, event.StateTopic, "", &topic); err != nil || topic.Topic != "" {
		t.Errorf("after the chat's topic was removed the portal's is %q (%v)", topic.Topic, err)
	}

	// A ghost's picture likewise.
	face := grayPNG(t, 3)
	if err := b.setGhostAvatar(ctx, ghost, "face-1", memMedia("image/png", face)); err != nil {
		t.Fatal(err)
	}
	url, err := owner.GetAvatarURL(ctx, ghost)
	if err != nil {
		t.Fatal(err)
	}
	if got := download(t, owner, url.CUString()); !bytes.Equal(got, face) {
		t.Errorf("the ghost's picture is %d bytes, not the contact's %d", len(got), len(face))
	}
	before = counter.n.Load()
	if err := b.setGhostAvatar(ctx, ghost, "face-1", memMedia("image/png", face)); err != nil {
		t.Fatal(err)
	}
	if n := counter.n.Load() - before; n != 0 {
		t.Errorf("setGhostAvatar without a change made %d requests, want none", n)
	}
	if err := b.setGhostAvatar(ctx, ghost, "", nil); err != nil {
		t.Fatal(err)
	}
	if url, err := owner.GetAvatarURL(ctx, ghost); err != nil || !url.IsEmpty() {
		t.Errorf("after the contact's picture was removed the ghost's is %v (%v)", url, err)
	}
}

// memMedia is an attachment whose bytes are data.
func memMedia(mime string, data []byte) *bridge.Media {
	return &bridge.Media{MIME: mime, Name: "picture", Size: int64(len(data)), Open: func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}}
}

// grayPNG is a small valid PNG of side pixels.
func grayPNG(t *testing.T, side int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, side, side))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// download fetches an mxc:// URI as cli.
func download(t *testing.T, cli *mautrix.Client, uri id.ContentURIString) []byte {
	t.Helper()
	parsed, err := uri.Parse()
	if err != nil {
		t.Fatalf("content uri %q: %v", uri, err)
	}
	data, err := cli.DownloadBytes(t.Context(), parsed)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
