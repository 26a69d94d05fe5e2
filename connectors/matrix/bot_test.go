package matrix

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
	_ "github.com/phonebridge/phonebridge/connectors/api" // the api connector type
	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/testservers"
)

const botPassword = "bot-password-123"

// human is a person on the Matrix side: a plain mautrix client whose
// /sync feeds every room event it sees into events.
type human struct {
	cli    *mautrix.Client
	id     id.UserID
	events chan *event.Event
}

func newHuman(t *testing.T, hs *testservers.Dendrite, localpart, displayName string) *human {
	t.Helper()
	userID, token := hs.Register(t, localpart, localpart+"-password", false)
	cli, err := mautrix.NewClient(hs.URL(), id.UserID(userID), token)
	if err != nil {
		t.Fatal(err)
	}
	cli.Client = &http.Client{Timeout: 30 * time.Second}
	if err := cli.SetDisplayName(t.Context(), displayName); err != nil {
		t.Fatal(err)
	}
	h := &human{cli: cli, id: id.UserID(userID), events: make(chan *event.Event, 4096)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	resp, err := cli.FullSyncRequest(t.Context(), mautrix.ReqSync{Timeout: 0})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(done)
		since := resp.NextBatch
		for ctx.Err() == nil {
			resp, err := cli.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 1000, Since: since})
			if err != nil {
				// The homeserver may be restarting: poll again shortly.
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			for room, jr := range resp.Rooms.Join {
				for _, evt := range append(jr.Timeline.Events, jr.Ephemeral.Events...) {
					evt.RoomID = room
					if evt.Content.Parsed == nil {
						evt.Content.ParseRaw(evt.Type)
					}
					h.events <- evt
				}
			}
			since = resp.NextBatch
		}
	}()
	return h
}

// next waits for the next event that matches, skipping others.
func (h *human) next(t *testing.T, what string, match func(*event.Event) bool) *event.Event {
	t.Helper()
	timeout := time.After(botWait)
	for {
		select {
		case evt := <-h.events:
			if match(evt) {
				return evt
			}
		case <-timeout:
			t.Fatalf("%s did not see %s within %v", h.id, what, botWait)
		}
	}
}

// botMessage matches the bot's m.room.message events in room.
func botMessage(room id.RoomID, bot id.UserID) func(*event.Event) bool {
	return func(evt *event.Event) bool {
		return evt.RoomID == room && evt.Sender == bot && evt.Type == event.EventMessage
	}
}

// botRig is a bridge from a config: an api connector (chat "family",
// notices to "notices") and a matrix bot-mode connector "mx", routed to
// the room #family:localhost that Ann created.
type botRig struct {
	hs      *testservers.Dendrite
	dir     string
	cfgPath string
	apiAddr string
	bot     id.UserID
	ann     *human
	room    id.RoomID

	alias string
	// extra is appended to the config's routes before the first start.
	extra string

	b   *bridge.Bridge
	mx  *Connector
	api *daemontest.Client
	// seq is the last API seq seen per chat, to resume after a restart;
	// pending holds frames of chats not waited for yet.
	seq     map[string]int64
	pending map[string][]daemontest.Frame
}

// rigs numbers the rigs on the shared homeserver, so each has its own
// users and room.
var rigs atomic.Int32

// newBotRig registers a bot and Ann on hs, has Ann create the room
// #familyN:localhost and writes the config; the bridge is started by
// start.
func newBotRig(t *testing.T, hs *testservers.Dendrite) *botRig {
	t.Helper()
	n := rigs.Add(1)
	r := &botRig{hs: hs, dir: t.TempDir(), seq: map[string]int64{}, pending: map[string][]daemontest.Frame{}}
	botID, _ := r.hs.Register(t, fmt.Sprintf("bot%d", n), botPassword, false)
	r.bot = id.UserID(botID)
	r.ann = newHuman(t, r.hs, fmt.Sprintf("ann%d", n), "Ann Matrix")
	r.alias = fmt.Sprintf("family%d", n)
	room, err := r.ann.cli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: r.alias, Name: "Family"})
	if err != nil {
		t.Fatal(err)
	}
	r.room = room.RoomID
	r.apiAddr = fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t))
	r.cfgPath = filepath.Join(r.dir, "phonebridge.yaml")
	return r
}

// writeConfig writes the rig's config, once.
func (r *botRig) writeConfig(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(r.cfgPath); err == nil {
		return
	}
	cfg := fmt.Sprintf(`state_dir: ./state
delivery:
  retry_min: 20ms
  retry_max: 300ms
notices:
  connector: api
  chat: notices
connectors:
  api:
    type: api
    listen: %s
    token: %s
  mx:
    type: matrix
    mode: bot
    homeserver: %s
    domain: localhost
    user_id: "%s"
    password: %s
    sync_timeout: 2s
routes:
  - name: family
    endpoints:
      - {connector: api, chat: family}
      - {connector: mx, chat: "#%s:localhost"}
%s`, r.apiAddr, daemontest.Token, r.hs.URL(), r.bot, botPassword, r.alias, r.extra)
	if err := os.WriteFile(r.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// start opens the bridge on the config, waits for the bot to be in the
// room and subscribes an API client to family and notices.
func (r *botRig) start(t *testing.T, tune func(c *Connector)) {
	t.Helper()
	r.writeConfig(t)
	r.b, r.mx = openBridge(t, r.cfgPath)
	if tune != nil {
		tune(r.mx)
	}
	if err := r.b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	b := r.b
	t.Cleanup(func() { r.stopBridge(t, b) })
	r.waitJoined(t, r.room)
	waitFor(t, "the connector to be connected", func() bool {
		return r.b.Status()["mx"].State == bridge.StateConnected
	})
	r.dial(t)
}

// waitJoined waits until the bot is in room.
func (r *botRig) waitJoined(t *testing.T, room id.RoomID) {
	t.Helper()
	waitFor(t, "the bot to join "+string(room), func() bool {
		resp, err := r.ann.cli.JoinedMembers(t.Context(), room)
		if err != nil {
			return false
		}
		_, in := resp.Joined[r.bot]
		return in
	})
}

// dial connects an API client and subscribes to family and notices, from
// where the previous client left off.
func (r *botRig) dial(t *testing.T) {
	t.Helper()
	var err error
	r.api, err = daemontest.Dial(r.apiAddr, daemontest.Token)
	if err != nil {
		t.Fatal(err)
	}
	api := r.api
	t.Cleanup(func() { api.Close() })
	for _, chat := range []string{"family", "notices", "secret"} {
		// The API log is the rig's own: replaying all of it misses
		// nothing posted before this client came.
		since := r.seq[chat]
		if err := r.api.Subscribe(chat, since); err != nil {
			t.Fatal(err)
		}
	}
}

// openBridge opens the bridge on the config at cfgPath, logging to stderr
// when MATRIX_TEST_SHOW_LOGS is set, and returns its matrix connector "mx".
func openBridge(t *testing.T, cfgPath string) (*bridge.Bridge, *Connector) {
	t.Helper()
	b := daemontest.OpenBridge(t, cfgPath, "MATRIX_TEST_SHOW_LOGS")
	l, ok := b.ChatLister("mx")
	if !ok {
		t.Fatal("the matrix connector lists no chats")
	}
	return b, l.(*Connector)
}

func (r *botRig) stopBridge(t *testing.T, b *bridge.Bridge) {
	if b == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), botWait)
	defer cancel()
	if err := b.Stop(ctx); err != nil && !strings.Contains(err.Error(), "closed") {
		t.Errorf("stop the bridge: %v", err)
	}
}

// restart stops the bridge, runs during, and opens the bridge again on
// the same state.
func (r *botRig) restart(t *testing.T, during func(), tune func(c *Connector)) {
	t.Helper()
	r.api.Close()
	r.stopBridge(t, r.b)
	r.b = nil
	if during != nil {
		during()
	}
	r.start(t, tune)
}

// send sends ev from the API client and waits for its ack.
func (r *botRig) send(t *testing.T, ev daemontest.WireEvent) {
	t.Helper()
	if ev.Chat == "" {
		ev.Chat = "family"
	}
	if ev.Kind == "" {
		ev.Kind = "message"
	}
	if ev.Kind == "" {
		ev.Kind = "message"
	}
	if ev.Sender == nil {
		ev.Sender = &daemontest.WireSender{ID: "carol", Name: "Carol"}
	}
	if err := r.api.Send(ev.ID, ev); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-r.api.Acks:
		if f.Type != "ack" {
			t.Fatalf("send %s: %+v", ev.ID, f)
		}
	case <-time.After(botWait):
		t.Fatalf("no ack for %s", ev.ID)
	}
}

// event waits for the next event delivered to the API client in chat.
func (r *botRig) event(t *testing.T, chat string) daemontest.Frame {
	t.Helper()
	if q := r.pending[chat]; len(q) > 0 {
		r.pending[chat] = q[1:]
		return q[0]
	}
	timeout := time.After(botWait)
	for {
		select {
		case f := <-r.api.Events:
			if f.Seq > 0 { // typing and read have none
				r.seq[f.Chat] = f.Seq
			}
			if f.Chat == chat {
				return f
			}
			r.pending[f.Chat] = append(r.pending[f.Chat], f)
		case <-r.api.Closed:
			t.Fatalf("the API connection closed: %v", r.api.Err())
		case <-timeout:
			t.Fatalf("no event reached API chat %s within %v", chat, botWait)
		}
	}
}

// annSays sends content into the room as Ann and returns its event id.
func (r *botRig) annSays(t *testing.T, typ event.Type, content any) id.EventID {
	t.Helper()
	resp, err := r.ann.cli.SendMessageEvent(t.Context(), r.room, typ, content)
	if err != nil {
		t.Fatal(err)
	}
	return resp.EventID
}

func (r *botRig) postAPI(t *testing.T, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+r.apiAddr+"/v1/events", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+daemontest.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST /v1/events: %s %s", resp.Status, b)
	}
}

func (r *botRig) getAPI(t *testing.T, path string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+r.apiAddr+path, nil)
	req.Header.Set("Authorization", "Bearer "+daemontest.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %v %s", path, err, resp.Status)
	}
	return b
}

// pngBytes is a 1x1 PNG.
var pngBytes, _ = base64.StdEncoding.DecodeString("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")

// TestBotOnDendrite runs the bot against a real homeserver, shared by the
// scenarios (it takes seconds to start), each with its own users and room.
func TestBotOnDendrite(t *testing.T) {
	hs := testservers.StartDendrite(t, testservers.DendriteOptions{})
	t.Run("RelaysBothWays", func(t *testing.T) { testRelaysBothWays(t, hs) })
	t.Run("Credentials", func(t *testing.T) { testCredentials(t, hs) })
	t.Run("CatchesUpAfterDowntime", func(t *testing.T) { testCatchesUp(t, hs) })
	t.Run("LogsInAgainAfterLogout", func(t *testing.T) { testRelogin(t, hs) })
	t.Run("UnjoinableRoomReportedOnce", func(t *testing.T) { testUnjoinable(t, hs) })
	t.Run("FollowsNewRoutes", func(t *testing.T) { testNewRoutes(t, hs) })
	t.Run("KickReportedOnce", func(t *testing.T) { testKicked(t, hs) })
	t.Run("ThroughTheBinary", func(t *testing.T) { testThroughTheBinary(t, hs) })
	// Last: after a restart Dendrite's /sync can be slow to show new
	// events for a while, which a test after it would take for the bot's.
	t.Run("HomeserverRestart", func(t *testing.T) { testHomeserverRestart(t, hs) })
}

// testRelaysBothWays drives a real bridge between the API and a Matrix
// room: every kind of event, each way, with ids rewritten to the other
// side's.
func testRelaysBothWays(t *testing.T, hs *testservers.Dendrite) {
	r := newBotRig(t, hs)
	// Said before the bridge existed: history, not relayed.
	r.annSays(t, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "old news"})
	r.start(t, nil)
	room, bot := r.room, r.bot
	isBot := botMessage(room, bot)

	// API → Matrix: formatted text, with the sender shown.
	r.send(t, daemontest.WireEvent{ID: "a1", Text: "hello *all*", HTML: "hello <b>all</b>"})
	e1 := r.ann.next(t, "the API message", isBot)
	m1 := e1.Content.AsMessage()
	if m1.MsgType != event.MsgText || m1.Body != "Carol: hello *all*" || m1.FormattedBody != "<b>Carol</b>: hello <b>all</b>" {
		t.Fatalf("Ann got %s %q / %q", m1.MsgType, m1.Body, m1.FormattedBody)
	}

	// A reply, an edit, a reaction and its removal, a delete.
	r.send(t, daemontest.WireEvent{ID: "a2", Text: "replying", ReplyTo: "a1"})
	e2 := r.ann.next(t, "the API reply", isBot)
	if got := e2.Content.AsMessage().RelatesTo.GetReplyTo(); got != e1.ID {
		t.Errorf("the reply answers %q, want %q", got, e1.ID)
	}
	r.send(t, daemontest.WireEvent{ID: "a3", Kind: "edit", Target: "a1", Text: "hello everyone"})
	e3 := r.ann.next(t, "the API edit", isBot)
	if m := e3.Content.AsMessage(); m.RelatesTo.GetReplaceID() != e1.ID || m.NewContent == nil || m.NewContent.Body != "Carol: hello everyone" {
		t.Errorf("the edit: %+v", m)
	}
	r.send(t, daemontest.WireEvent{ID: "a4", Kind: "reaction", Target: "a1", Emoji: "👍"})
	e4 := r.ann.next(t, "the API reaction", func(evt *event.Event) bool { return evt.Sender == bot && evt.Type == event.EventReaction })
	if rel := e4.Content.AsReaction().RelatesTo; rel.EventID != e1.ID || rel.Key != "👍" {
		t.Errorf("the reaction: %+v", rel)
	}
	r.send(t, daemontest.WireEvent{ID: "a5", Kind: "reaction_remove", Target: "a1", Emoji: "👍"})
	e5 := r.ann.next(t, "the reaction's removal", func(evt *event.Event) bool { return evt.Sender == bot && evt.Type == event.EventRedaction })
	if e5.Redacts != e4.ID && e5.Content.AsRedaction().Redacts != e4.ID {
		t.Errorf("the removal redacts %q, want the reaction %q", e5.Redacts, e4.ID)
	}
	r.send(t, daemontest.WireEvent{ID: "a6", Kind: "delete", Target: "a2"})
	e6 := r.ann.next(t, "the API delete", func(evt *event.Event) bool { return evt.Sender == bot && evt.Type == event.EventRedaction })
	if e6.Redacts != e2.ID && e6.Content.AsRedaction().Redacts != e2.ID {
		t.Errorf("the delete redacts %q, want %q", e6.Redacts, e2.ID)
	}

	// API → Matrix media, uploaded to the content repository.
	r.postAPI(t, fmt.Sprintf(`{"id":"a7","kind":"message","chat":"family","sender":{"id":"carol","name":"Carol"},"text":"a dot",
		"media":[{"mime":"image/png","name":"dot.png","data":%q}]}`, base64.StdEncoding.EncodeToString(pngBytes)))
	e7 := r.ann.next(t, "the API image", isBot)
	m7 := e7.Content.AsMessage()
	if m7.MsgType != event.MsgImage || m7.FileName != "dot.png" || m7.Body != "Carol: a dot" || m7.Info == nil || m7.Info.MimeType != "image/png" {
		t.Fatalf("the image event: %+v", m7)
	}
	uri, _ := m7.URL.Parse()
	got, err := r.ann.cli.DownloadBytes(t.Context(), uri)
	if err != nil || !bytes.Equal(got, pngBytes) {
		t.Errorf("the uploaded image: %d bytes, %v; want the PNG", len(got), err)
	}

	// API → Matrix typing.
	r.send(t, daemontest.WireEvent{ID: "t1", Kind: "typing"})
	r.ann.next(t, "the bot typing", func(evt *event.Event) bool {
		return evt.Type == event.EphemeralEventTyping && evt.RoomID == room && contains(evt.Content.AsTyping().UserIDs, bot)
	})
	// Stopping ends it at once, not when typingTimeout runs out.
	stopped := time.Now()
	r.send(t, daemontest.WireEvent{ID: "t2", Kind: "typing", StoppedTyping: true})
	r.ann.next(t, "the bot no longer typing", func(evt *event.Event) bool {
		return evt.Type == event.EphemeralEventTyping && evt.RoomID == room && !contains(evt.Content.AsTyping().UserIDs, bot)
	})
	if waited := time.Since(stopped); waited > typingTimeout*3/4 {
		t.Errorf("the bot stopped typing after %v, as if by the %v timeout rather than by the stop", waited, typingTimeout)
	}

	// Matrix → API: the backlog stayed out; formatted text from Ann.
	h1 := r.annSays(t, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "**hi** from Matrix",
		Format: event.FormatHTML, FormattedBody: "<strong>hi</strong> from Matrix"})
	f := r.event(t, "family")
	if f.Event.Text != "**hi** from Matrix" || f.Event.HTML != "<b>hi</b> from Matrix" || f.Event.Sender == nil ||
		f.Event.Sender.Name != "Ann Matrix" || f.Event.Sender.ID != string(r.ann.id) {
		t.Fatalf("the API got %+v %+v, want Ann's message (and not the backlog)", f.Event, f.Event.Sender)
	}
	apiH1 := f.Event.ID

	// A reply to the bridged message names the API's own id.
	r.annSays(t, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "> <" + string(bot) + "> Carol: hello everyone\n\nnice",
		Format: event.FormatHTML, FormattedBody: "<mx-reply><blockquote>Carol: hello everyone</blockquote></mx-reply>nice",
		RelatesTo: (&event.RelatesTo{}).SetReplyTo(e1.ID)})
	if f := r.event(t, "family"); f.Event.Text != "nice" || f.Event.HTML != "nice" || f.Event.ReplyTo != "a1" {
		t.Errorf("the reply reached the API as %+v, want text nice replying to a1", f.Event)
	}

	// An edit, a reaction, its removal (a redaction), a delete.
	edit := &event.MessageEventContent{MsgType: event.MsgText, Body: "hi again"}
	edit.SetEdit(h1)
	r.annSays(t, event.EventMessage, edit)
	if f := r.event(t, "family"); f.Event.Kind != "edit" || f.Event.Target != apiH1 || f.Event.Text != "hi again" {
		t.Errorf("the edit reached the API as %+v", f.Event)
	}
	reaction := r.annSays(t, event.EventReaction, reactionContent(string(e1.ID), "❤️"))
	if f := r.event(t, "family"); f.Event.Kind != "reaction" || f.Event.Target != "a1" || f.Event.Emoji != "❤️" {
		t.Errorf("the reaction reached the API as %+v", f.Event)
	}
	if _, err := r.ann.cli.RedactEvent(t.Context(), room, reaction); err != nil {
		t.Fatal(err)
	}
	if f := r.event(t, "family"); f.Event.Kind != "reaction_remove" || f.Event.Target != "a1" || f.Event.Emoji != "❤️" {
		t.Errorf("the reaction's redaction reached the API as %+v, want a reaction_remove", f.Event)
	}
	if _, err := r.ann.cli.RedactEvent(t.Context(), room, h1); err != nil {
		t.Fatal(err)
	}
	if f := r.event(t, "family"); f.Event.Kind != "delete" || f.Event.Target != apiH1 {
		t.Errorf("the redaction reached the API as %+v", f.Event)
	}

	// Matrix → API media, opened lazily from the content repository.
	up, err := r.ann.cli.UploadBytesWithName(t.Context(), pngBytes, "image/png", "pic.png")
	if err != nil {
		t.Fatal(err)
	}
	raw := rawSubscribe(t, r.apiAddr, "family")
	r.annSays(t, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgImage, Body: "sunset", FileName: "pic.png",
		URL: up.ContentURI.CUString(), Info: &event.FileInfo{MimeType: "image/png", Size: len(pngBytes)}})
	media := raw.nextMedia(t)
	if media.MIME != "image/png" || media.Name != "pic.png" || media.Caption != "sunset" {
		t.Errorf("the API got media %+v", media)
	}
	if got := r.getAPI(t, media.URL); !bytes.Equal(got, pngBytes) {
		t.Errorf("the API serves %d bytes, want the PNG", len(got))
	}
	if f := r.event(t, "family"); f.Event.Text != "sunset" {
		t.Errorf("the image's caption reached the API as %q", f.Event.Text)
	}

	// Typing and read receipts, best effort, but here they arrive.
	if _, err := r.ann.cli.UserTyping(t.Context(), room, true, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if f := r.event(t, "family"); f.Event.Kind != "typing" || f.Event.Sender == nil || f.Event.Sender.ID != string(r.ann.id) {
		t.Errorf("Ann's typing reached the API as %+v", f.Event)
	}
	if err := r.ann.cli.SendReceipt(t.Context(), room, e3.ID, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	if f := r.event(t, "family"); f.Event.Kind != "read" || f.Event.Target != "a1" {
		t.Errorf("Ann's read receipt reached the API as %+v, want read of a1", f.Event)
	}
	last := r.annSays(t, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "read me"})
	apiLast := r.event(t, "family").Event.ID
	r.send(t, daemontest.WireEvent{ID: "rd1", Kind: "read", Target: apiLast})
	r.ann.next(t, "the bot's read receipt", func(evt *event.Event) bool {
		if evt.Type != event.EphemeralEventReceipt || evt.RoomID != room {
			return false
		}
		_, read := (*evt.Content.AsReceipt())[last][event.ReceiptTypeRead][bot]
		return read
	})
}

func contains[T comparable](list []T, v T) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// rawAPI reads an API websocket's frames whole (daemontest's client
// leaves media out).
type rawAPI struct {
	conn   *websocket.Conn
	frames chan map[string]json.RawMessage
}

type wireMedia struct {
	MIME    string `json:"mime"`
	Name    string `json:"name"`
	Size    int64  `json:"size"`
	Caption string `json:"caption"`
	URL     string `json:"url"`
}

func rawSubscribe(t *testing.T, addr, chat string) *rawAPI {
	t.Helper()
	conn, err := daemontest.DialRaw(addr, daemontest.Token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.WriteJSON(map[string]any{"type": "subscribe", "chat": chat}); err != nil {
		t.Fatal(err)
	}
	r := &rawAPI{conn: conn, frames: make(chan map[string]json.RawMessage, 256)}
	var once sync.Once
	subscribed := make(chan struct{})
	go func() {
		for {
			var f map[string]json.RawMessage
			if err := conn.ReadJSON(&f); err != nil {
				close(r.frames)
				return
			}
			if string(f["type"]) == `"subscribed"` {
				once.Do(func() { close(subscribed) })
			}
			r.frames <- f
		}
	}()
	select {
	case <-subscribed:
	case <-time.After(botWait):
		t.Fatal("no subscribed frame")
	}
	return r
}

func (r *rawAPI) nextMedia(t *testing.T) wireMedia {
	t.Helper()
	timeout := time.After(botWait)
	for {
		select {
		case f, ok := <-r.frames:
			if !ok {
				t.Fatal("the raw API connection closed")
			}
			var ev struct {
				Media []wireMedia `json:"media"`
			}
			if json.Unmarshal(f["event"], &ev) == nil && len(ev.Media) > 0 {
				return ev.Media[0]
			}
		case <-timeout:
			t.Fatal("no media event reached the API")
		}
	}
}

// testCredentials: an access token is checked against user_id; a bad one
// or a wrong password fails Start with a line saying what to fix; a
// password login's device is kept and reused at the next start.
func testCredentials(t *testing.T, hs *testservers.Dendrite) {
	n := rigs.Add(1)
	botID, botToken := hs.Register(t, fmt.Sprintf("cred%d", n), botPassword, false)
	annID, annToken := hs.Register(t, fmt.Sprintf("other%d", n), "other-password", false)
	store, err := bridge.OpenStore(filepath.Join(t.TempDir(), "bridge.db"), "normal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	start := func(f func(o *Options)) (*Connector, error) {
		o := NewOptions()
		o.Mode, o.Homeserver, o.Domain, o.UserID = ModeBot, hs.URL(), "localhost", botID
		f(o)
		c, err := New(bridge.Env{Name: "mx", Logger: slog.New(slog.DiscardHandler), Store: store}, o)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(t.Context(), &recordingSink{}); err != nil {
			return nil, err
		}
		t.Cleanup(func() { c.Stop(context.Background()) })
		return c, nil
	}
	oneLineSaying := func(err error, says ...string) {
		t.Helper()
		if err == nil {
			t.Fatalf("Start succeeded, want it to fail saying %q", says)
		}
		for _, s := range says {
			if !strings.Contains(err.Error(), s) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q should say %q on one line", err, s)
			}
		}
		if strings.Contains(err.Error(), annToken) || strings.Contains(err.Error(), botPassword) {
			t.Errorf("error %q shows a secret", err)
		}
	}
	_, err = start(func(o *Options) { o.AccessToken = annToken })
	oneLineSaying(err, annID, "not user_id "+botID)
	_, err = start(func(o *Options) { o.AccessToken = "not-a-token" })
	oneLineSaying(err, "rejected access_token", "M_UNKNOWN_TOKEN")
	_, err = start(func(o *Options) { o.Password = "wrong-password" })
	oneLineSaying(err, "refused the password login", "check user_id and password")

	c, err := start(func(o *Options) { o.AccessToken = botToken })
	if err != nil {
		t.Fatalf("a valid token: %v", err)
	}
	c.Stop(t.Context())

	devices := func() int {
		cli, _ := mautrix.NewClient(hs.URL(), id.UserID(botID), botToken)
		resp, err := cli.GetDevicesInfo(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.Devices)
	}
	before := devices()
	first, err := start(func(o *Options) { o.Password = botPassword })
	if err != nil {
		t.Fatalf("password login: %v", err)
	}
	device := first.client().DeviceID
	first.Stop(t.Context())
	second, err := start(func(o *Options) { o.Password = botPassword })
	if err != nil {
		t.Fatalf("second start: %v", err)
	}
	if got := second.client().DeviceID; got != device {
		t.Errorf("the second start is device %s, the first %s: the session was not reused", got, device)
	}
	if got := devices(); got != before+1 {
		t.Errorf("the account has %d devices, had %d before two password starts: want one more, not two", got, before)
	}
	var saved string
	store.QueryRowContext(t.Context(), `SELECT access_token FROM matrix_bot_sessions WHERE connector = 'mx'`).Scan(&saved)
	if saved == "" || saved == botToken {
		t.Error("the password login's token was not kept")
	}
}

// testCatchesUp: the bridge is down while more happens in the room than
// one /sync carries; on restart it reads the gap back and relays all of
// it once, in order.
func testCatchesUp(t *testing.T, hs *testservers.Dendrite) {
	r := newBotRig(t, hs)
	small := func(c *Connector) { c.timelineLimit = 3 }
	r.start(t, small)
	r.annSays(t, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "before"})
	if f := r.event(t, "family"); f.Event.Text != "before" {
		t.Fatalf("got %q", f.Event.Text)
	}
	device := r.mx.client().DeviceID
	const away = 12
	r.restart(t, func() {
		for i := 0; i < away; i++ {
			r.annSays(t, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprintf("away %02d", i)})
		}
	}, small)
	if got := r.mx.client().DeviceID; got != device {
		t.Errorf("after a restart the bot is device %s, before %s", got, device)
	}
	r.annSays(t, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "back"})
	var got []string
	for {
		f := r.event(t, "family")
		if f.Event.Text == "back" {
			break
		}
		got = append(got, f.Event.Text)
	}
	var want []string
	for i := 0; i < away; i++ {
		want = append(want, fmt.Sprintf("away %02d", i))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after the downtime the API got\n%q\nwant\n%q", got, want)
	}
}

// testUnjoinable: a routed room the bot may not join is reported once;
// an invite is the fix, and the bot joins and relays.
func testUnjoinable(t *testing.T, hs *testservers.Dendrite) {
	r := newBotRig(t, hs)
	secret, err := r.ann.cli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Secret"})
	if err != nil {
		t.Fatal(err)
	}
	r.extra = fmt.Sprintf("  - name: secret\n    endpoints:\n      - {connector: api, chat: secret}\n      - {connector: mx, chat: \"%s\"}\n", secret.RoomID)
	r.start(t, nil)
	f := r.event(t, "notices")
	if !strings.Contains(f.Event.Text, "cannot join room "+string(secret.RoomID)) || !strings.Contains(f.Event.Text, "invite") {
		t.Fatalf("notice %q, want one saying the bot cannot join the room and what to do", f.Event.Text)
	}
	if _, err := r.ann.cli.InviteUser(t.Context(), secret.RoomID, &mautrix.ReqInviteUser{UserID: r.bot}); err != nil {
		t.Fatal(err)
	}
	r.waitJoined(t, secret.RoomID)
	r.send(t, daemontest.WireEvent{ID: "s1", Chat: "secret", Text: "psst"})
	r.ann.next(t, "the message in the secret room", func(evt *event.Event) bool {
		return botMessage(secret.RoomID, r.bot)(evt) && evt.Content.AsMessage().Body == "Carol: psst"
	})
	if n := noticeCount(t, r); n != 1 {
		t.Errorf("%d notices, want the one", n)
	}
}

// noticeCount is how many notices the bridge has posted.
func noticeCount(t *testing.T, r *botRig) int {
	t.Helper()
	var n int
	if err := r.b.Store().QueryRowContext(t.Context(), `SELECT COUNT(*) FROM messages WHERE origin_connector = ?`, bridge.NoticeOrigin).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// testKicked: the bot kicked from its room is reported once, and what
// was meant for the room fails without another notice per message.
func testKicked(t *testing.T, hs *testservers.Dendrite) {
	r := newBotRig(t, hs)
	r.start(t, nil)
	if _, err := r.ann.cli.KickUser(t.Context(), r.room, &mautrix.ReqKickUser{UserID: r.bot, Reason: "too chatty"}); err != nil {
		t.Fatal(err)
	}
	f := r.event(t, "notices")
	if !strings.Contains(f.Event.Text, "removed from room "+string(r.room)) || !strings.Contains(f.Event.Text, "too chatty") || !strings.Contains(f.Event.Text, "invited back") {
		t.Fatalf("notice %q, want one saying who removed the bot, why, and what to do", f.Event.Text)
	}
	for i := 0; i < 3; i++ {
		r.send(t, daemontest.WireEvent{ID: fmt.Sprintf("k%d", i), Text: "anyone?"})
	}
	waitFor(t, "the three sends to fail", func() bool {
		var n int
		r.b.Store().QueryRowContext(t.Context(), `SELECT COUNT(*) FROM outbox WHERE connector = 'mx' AND failed = 1`).Scan(&n)
		return n == 3
	})
	if n := noticeCount(t, r); n != 1 {
		t.Errorf("%d notices after the kick and three failed sends, want 1", n)
	}
}

// testHomeserverRestart kills the homeserver and restarts it, with
// events for it accepted by the core while it is down, and Ann writing
// again once it is back: every event arrives once, in order.
func testHomeserverRestart(t *testing.T, hs *testservers.Dendrite) {
	r := newBotRig(t, hs)
	r.start(t, nil)
	apiSays := func(from, to int) {
		for i := from; i < to; i++ {
			r.send(t, daemontest.WireEvent{ID: fmt.Sprintf("h%02d", i), Text: fmt.Sprintf("api %02d", i)})
		}
	}
	annSays := func(from, to int) {
		for i := from; i < to; i++ {
			r.annSays(t, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: fmt.Sprintf("mx %02d", i)})
		}
	}
	apiSays(0, 10)
	annSays(0, 5)
	// Stopped, not SIGKILLed: Dendrite 0.13.8 killed can lose events it
	// had acknowledged, or hide later ones (its internal NATS stream;
	// about 1 run in 10), which no client gets back. The stop comes once
	// it has shown what it took.
	var got []string
	for len(got) < 5 {
		got = append(got, r.event(t, "family").Event.Text)
	}
	r.ann.next(t, "the API's messages before the kill", func(evt *event.Event) bool {
		return botMessage(r.room, r.bot)(evt) && evt.Content.AsMessage().Body == "Carol: api 09"
	})
	hs.Stop()
	apiSays(10, 20) // accepted by the core while the homeserver is down
	hs.Restart(t)
	annSays(5, 10)

	// Matrix → API: each once, in order, then the marker.
	annSays(10, 11)
	for {
		f := r.event(t, "family")
		got = append(got, f.Event.Text)
		if f.Event.Text == "mx 10" {
			break
		}
	}
	var want []string
	for i := 0; i <= 10; i++ {
		want = append(want, fmt.Sprintf("mx %02d", i))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the API got\n%q\nwant\n%q", got, want)
	}

	// API → Matrix: each once, in order, in the room's history.
	apiSays(20, 21)
	r.ann.next(t, "the last API message", func(evt *event.Event) bool {
		return botMessage(r.room, r.bot)(evt) && evt.Content.AsMessage().Body == "Carol: api 20"
	})
	resp, err := r.ann.cli.Messages(t.Context(), r.room, "", "", mautrix.DirectionBackward, &mautrix.FilterPart{Senders: []id.UserID{r.bot}}, 100)
	if err != nil {
		t.Fatal(err)
	}
	got, want = nil, nil
	for i := len(resp.Chunk) - 1; i >= 0; i-- {
		if evt := resp.Chunk[i]; evt.Type == event.EventMessage {
			body, _ := evt.Content.Raw["body"].(string)
			got = append(got, body)
		}
	}
	for i := 0; i <= 20; i++ {
		want = append(want, fmt.Sprintf("Carol: api %02d", i))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the room holds\n%q\nwant\n%q", got, want)
	}
}

// TestSincePositionWaitsForTheCommit: a batch the core did not commit is
// asked for again from the same position, and the position is saved only
// once the core took every event in it.
func TestSincePositionWaitsForTheCommit(t *testing.T) {
	f := newFakeHS(t)
	batch := `{"next_batch":"s2","rooms":{"join":{"!r:example.org":{"timeline":{"events":[
		{"type":"m.room.message","event_id":"$1","sender":"@ann:example.org","origin_server_ts":1,"content":{"msgtype":"m.text","body":"one"}},
		{"type":"m.room.message","event_id":"$own","sender":"` + fakeUser + `","origin_server_ts":2,"content":{"msgtype":"m.text","body":"echo"}},
		{"type":"m.room.message","event_id":"$2","sender":"@ann:example.org","origin_server_ts":3,"content":{"msgtype":"m.text","body":"two"}}]},
		"state":{"events":[{"type":"m.room.member","state_key":"@ann:example.org","sender":"@ann:example.org","content":{"membership":"join","displayname":"Ann"}},
			{"type":"m.room.name","state_key":"","sender":"@ann:example.org","content":{"name":"Family"}}]}}}}}`
	f.syncAnswer = func(since string) (int, string) {
		if since == "s1" {
			return 200, batch
		}
		return 0, ""
	}
	storeDown := errors.New("store the event: disk full")
	var refusals atomic.Int32
	sink := &recordingSink{refuse: func(ev *bridge.Event) error {
		if ev.ID == "$2" && refusals.Add(1) == 1 {
			return storeDown
		}
		return nil
	}}
	c, _ := startFakeBotWith(t, f, sink)
	saved := func() string {
		var since string
		c.store.QueryRowContext(t.Context(), `SELECT since FROM matrix_bot_sessions WHERE connector = 'mx'`).Scan(&since)
		return since
	}
	waitFor(t, "the batch to be committed", func() bool { return saved() == "s2" })

	f.mu.Lock()
	var sinces []string
	for _, q := range f.syncs {
		sinces = append(sinces, q.Get("since"))
		if q.Get("since") != "" && q.Get("timeout") != "1000" {
			t.Errorf("/sync with timeout=%s, want sync_timeout (1000 ms): an idle bot polls once per sync_timeout", q.Get("timeout"))
		}
	}
	f.mu.Unlock()
	if len(sinces) < 3 || sinces[0] != "" || sinces[1] != "s1" || sinces[2] != "s1" {
		t.Errorf("/sync positions %q, want the first start, then s1 twice (the refused batch again)", sinces)
	}
	var got []string
	for _, ev := range sink.events() {
		got = append(got, ev.ID+"="+ev.Text+"/"+ev.Sender.Name+"/"+ev.Chat.Name)
	}
	want := []string{"$1=one/Ann/Family", "$2=two/Ann/Family", "$1=one/Ann/Family", "$2=two/Ann/Family"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("submitted %q, want the batch twice without the bot's own event", got)
	}
}

// testThroughTheBinary runs the real phonebridge binary on the rig's
// config: an API message reaches the room, Ann answers it, and the answer
// comes back to the API as a reply to the API's own message.
func testThroughTheBinary(t *testing.T, hs *testservers.Dendrite) {
	bin := daemontest.Binary(t)
	r := newBotRig(t, hs)
	r.writeConfig(t)
	d := daemontest.Start(t, bin, "run", "-c", r.cfgPath)
	r.waitJoined(t, r.room)
	r.dial(t)
	r.send(t, daemontest.WireEvent{ID: "p1", Text: "ping"})
	ping := r.ann.next(t, "the API message", func(evt *event.Event) bool {
		return botMessage(r.room, r.bot)(evt) && evt.Content.AsMessage().Body == "Carol: ping"
	})
	answer := &event.MessageEventContent{MsgType: event.MsgText, Body: "pong"}
	answer.RelatesTo = (&event.RelatesTo{}).SetReplyTo(ping.ID)
	r.annSays(t, event.EventMessage, answer)
	if f := r.event(t, "family"); f.Event.Text != "pong" || f.Event.ReplyTo != "p1" || f.Event.Sender == nil || f.Event.Sender.Name != "Ann Matrix" {
		t.Errorf("the API got %+v, want Ann's pong replying to p1\n%s", f.Event, d.Logs())
	}
	d.Stop(5 * time.Second)
	cfg, err := config.Load(r.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	store, err := bridge.OpenStore(cfg.Store.Path, "normal")
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var token string
	if err := store.QueryRowContext(t.Context(), `SELECT access_token FROM matrix_bot_sessions`).Scan(&token); err != nil || token == "" {
		t.Fatalf("no saved session: %v", err)
	}
	if logs := d.Logs(); strings.Contains(logs, botPassword) || strings.Contains(logs, token) {
		t.Errorf("the daemon logged a secret:\n%s", logs)
	}
	if os.Getenv("MATRIX_TEST_SHOW_LOGS") != "" {
		t.Log(d.Logs())
	}
}

// testRelogin: the bot's device is logged out while it runs; with a
// password it logs in again and goes on relaying.
func testRelogin(t *testing.T, hs *testservers.Dendrite) {
	r := newBotRig(t, hs)
	r.start(t, nil)
	old := r.mx.client()
	stale, _ := mautrix.NewClient(hs.URL(), old.UserID, old.AccessToken)
	if _, err := stale.Logout(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new login", func() bool {
		cli := r.mx.client()
		return cli.AccessToken != old.AccessToken
	})
	r.annSays(t, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "still there?"})
	if f := r.event(t, "family"); f.Event.Text != "still there?" {
		t.Errorf("after the new login the API got %q", f.Event.Text)
	}
	r.send(t, daemontest.WireEvent{ID: "l1", Text: "yes"})
	r.ann.next(t, "the answer", func(evt *event.Event) bool {
		return botMessage(r.room, r.bot)(evt) && evt.Content.AsMessage().Body == "Carol: yes"
	})
}

// testNewRoutes: routes changed while running (a reload) name a new room
// by alias; the bot joins it and relays there.
func testNewRoutes(t *testing.T, hs *testservers.Dendrite) {
	r := newBotRig(t, hs)
	r.start(t, nil)
	alias := r.alias + "-more"
	more, err := r.ann.cli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: alias, Name: "More"})
	if err != nil {
		t.Fatal(err)
	}
	// Said before the bot joins: history, which the batch with the bot's
	// join must not relay (the lean /sync filter hides that join).
	if _, err := r.ann.cli.SendText(t.Context(), more.RoomID, "said before the bot came"); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(r.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	routes := append(cfg.Routes, config.Route{Name: "more", Endpoints: []config.Endpoint{
		{Connector: "api", Chat: "secret", Direction: config.Both},
		{Connector: "mx", Chat: "#" + alias + ":localhost", Direction: config.Both},
	}})
	if err := r.b.SetRoutes(t.Context(), routes); err != nil {
		t.Fatal(err)
	}
	r.waitJoined(t, more.RoomID)
	r.annSays(t, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "first family message"})
	if f := r.event(t, "family"); f.Event.Text != "first family message" {
		t.Errorf("the old route carried %q", f.Event.Text)
	}
	if _, err := r.ann.cli.SendText(t.Context(), more.RoomID, "in the new room"); err != nil {
		t.Fatal(err)
	}
	if f := r.event(t, "secret"); f.Event.Text != "in the new room" {
		t.Errorf("the new route carried %q first, want the first message after the join (history is not relayed)", f.Event.Text)
	}
}

// TestQuietBatchesSaveTheirPositionLater: a batch with nothing to relay
// (the bot's own message coming back) does not move the saved /sync
// position within quietSaveEvery of the last save, so a relayed message
// costs no commit for its echo; the next batch with news saves it.
func TestQuietBatchesSaveTheirPositionLater(t *testing.T) {
	f := newFakeHS(t)
	room := func(next, id, sender string) string {
		return `{"next_batch":"` + next + `","rooms":{"join":{"!r:example.org":{"timeline":{"events":[
			{"type":"m.room.message","event_id":"` + id + `","sender":"` + sender + `","origin_server_ts":1,"content":{"msgtype":"m.text","body":"hi"}}]}}}}}`
	}
	release := make(chan struct{})
	f.syncAnswer = func(since string) (int, string) {
		switch since {
		case "s1":
			return 200, room("s2", "$news1", "@ann:example.org")
		case "s2":
			return 200, room("s3", "$echo", fakeUser)
		case "s3":
			select {
			case <-release:
			case <-time.After(20 * time.Second): // the test failed before its release
			}
			return 200, room("s4", "$news2", "@ann:example.org")
		}
		return 0, ""
	}
	c, _ := startFakeBotWith(t, f, &recordingSink{})
	saved := func() string {
		var since string
		c.store.QueryRowContext(t.Context(), `SELECT since FROM matrix_bot_sessions WHERE connector = 'mx'`).Scan(&since)
		return since
	}
	waitFor(t, "the first batch's position to be saved", func() bool { return saved() == "s2" })
	waitFor(t, "the quiet batch to be handled", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return slices.ContainsFunc(f.syncs, func(q url.Values) bool { return q.Get("since") == "s3" })
	})
	// A lazy write would have committed by now.
	time.Sleep(time.Second)
	if got := saved(); got != "s2" {
		t.Errorf("saved position %q after a batch of the bot's own message, want s2 still", got)
	}
	close(release)
	waitFor(t, "the next batch with news to save its position", func() bool { return saved() == "s4" })
}
