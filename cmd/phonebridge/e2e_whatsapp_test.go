package main

// WhatsApp end to end, through the real binary built with -tags fakewa:
// fake phones on internal/fakewa ↔ the WhatsApp connector (the real
// whatsmeow client) ↔ Matrix in appservice mode on Dendrite (a portal per
// chat, a ghost per contact), IRC on ngIRCd and the websocket API, in a
// one-to-one chat (Bob) and a group (Family: Ann, Bob and Eve).
//
// Linking here is by pairing code (`phonebridge link wa --phone`, the code
// read from its stdout and typed into Ann's fake phone): the QR code's way
// through the terminal, the web page and the Matrix management room has
// tests of its own.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waCommon"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge/control"
	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/fakewa"
	"github.com/phonebridge/phonebridge/internal/testservers"
)

// e2eWait bounds each wait for something to arrive.
const e2eWait = 60 * time.Second

// e2eWorld is TestWhatsAppEndToEnd's world: a fake WhatsApp where Ann's account
// is linked to the daemon, Dendrite with the daemon's appservice and Ann's
// Matrix account (the portals' owner), ngIRCd with Carol in #bob and
// #family, and an API client.
type e2eWorld struct {
	bin string
	env []string // the fakewa variables
	dir string   // the config's directory (short: the control socket)
	cfg string

	srv           *fakewa.Server
	ann, bob, eve *fakewa.Phone
	family        *fakewa.Group

	hs       *testservers.Dendrite
	asListen string
	hsToken  string
	owner    *daemontest.MatrixUser

	ircd  *testservers.Ngircd
	carol *ircStream // in #bob and #family

	apiAddr   string
	mediaAddr string
	api       *waAPI

	d *daemontest.Daemon
}

func newE2EWorld(t *testing.T) *e2eWorld {
	t.Helper()
	w := &e2eWorld{bin: fakewaBinary(t)}
	// One-to-one chats come by LID with the number beside, as WhatsApp
	// sends them today; Family names its members by phone number, as
	// groups not yet moved to LIDs do.
	opts := fakewa.Options{LIDAddressing: true}
	if os.Getenv("PHONEBRIDGE_TEST_LOG") != "" {
		opts.Logf = func(f string, a ...any) { fmt.Fprintf(os.Stderr, "fakewa: "+f+"\n", a...) }
	}
	srv, err := fakewa.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	w.srv = srv
	w.ann = srv.NewPhone("15550001111", "100000000000001", "Ann")
	w.bob = srv.NewPhone("15550002222", "100000000000002", "Bob")
	w.eve = srv.NewPhone("15550006666", "100000000000006", "Eve")
	w.family = srv.NewGroup("120363000000000001", "Family", w.ann, w.bob, w.eve)
	w.family.LIDAddressing = false
	// Ann's phone has her name and her contacts in its app state, which
	// a linked device syncs.
	ctx := t.Context()
	if err := w.ann.SetPushName(ctx, "Ann"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*fakewa.Phone{w.bob, w.eve} {
		if err := w.ann.SetContact(ctx, p.PN, p.PushName, p.PushName); err != nil {
			t.Fatal(err)
		}
	}

	if w.dir, err = os.MkdirTemp("", "pbe"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(w.dir) })
	if w.env, err = srv.Env(w.dir); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("PHONEBRIDGE_TEST_LOG") != "" {
		w.env = append(w.env, "PHONEBRIDGE_LOG_LEVEL=debug")
	}
	w.cfg = filepath.Join(w.dir, "phonebridge.yaml")
	w.asListen = fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t))
	w.apiAddr = fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t))
	w.mediaAddr = fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t))
	w.ircd = testservers.StartNgircd(t, testservers.NgircdOptions{})

	// The registration comes first, as an operator makes it: the
	// homeserver loads it at start.
	w.writeConfig(t, "http://127.0.0.1:1")
	if out, errOut, code := daemontest.RunCommand(t, w.bin, "matrix", "registration", "mx", "-c", w.cfg); code != 0 {
		t.Fatalf("phonebridge matrix registration: %d\n%s%s", code, out, errOut)
	}
	regPath := filepath.Join(w.dir, "registration.yaml")
	reg, err := appservice.LoadRegistration(regPath)
	if err != nil {
		t.Fatal(err)
	}
	w.hsToken = reg.ServerToken
	w.hs = testservers.StartDendrite(t, testservers.DendriteOptions{AppServiceFiles: []string{regPath}})
	w.writeConfig(t, w.hs.URL())
	w.owner = daemontest.NewMatrixUser(t, w.hs, "ann", "Ann M")

	w.carol = watchChannels(t, w.ircd.Addr(), "carol", "#bob", "#family")
	return w
}

// writeConfig writes the daemon's config for the homeserver at hsURL:
// every WhatsApp chat to its portal and to the API chat of the same id,
// Bob's chat and Family to IRC channels, notices to the API.
func (w *e2eWorld) writeConfig(t *testing.T, hsURL string) {
	t.Helper()
	cfg := fmt.Sprintf(`state_dir: ./state
delivery:
  retry_min: 50ms
  retry_max: 1s
notices:
  connector: api
  chat: notices
media:
  listen: %[1]s
  public_url: http://%[1]s
connectors:
  wa:
    type: whatsapp
  mx:
    type: matrix
    mode: appservice
    homeserver: %[2]s
    domain: localhost
    registration: registration.yaml
    listen: %[3]s
    owner: "@ann:localhost"
  irc:
    type: irc
    server: %[4]s
    tls: false
    nick: wabridge
    flood:
      rate: -1
  api:
    type: api
    listen: %[5]s
    token: %[6]s
routes:
  - name: whatsapp
    endpoints:
      - {connector: wa, chats: all}
      - {connector: mx, chats: all}
      - {connector: api, chats: all}
  - name: bob-irc
    endpoints:
      - {connector: wa, chat: "%[7]s"}
      - {connector: irc, chat: "#bob"}
  - name: family-irc
    endpoints:
      - {connector: wa, chat: "%[8]s"}
      - {connector: irc, chat: "#family"}
`, w.mediaAddr, hsURL, w.asListen, w.ircd.Addr(), w.apiAddr, daemontest.Token, w.bob.PN, w.family.JID)
	if err := os.WriteFile(w.cfg, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// start runs the daemon and connects the API client, subscribed to
// Bob's chat, Family and the notices.
func (w *e2eWorld) start(t *testing.T) {
	t.Helper()
	w.d = daemontest.StartEnv(t, w.env, w.bin, "run", "-c", w.cfg)
	w.api = dialWAAPI(t, w.apiAddr, w.bob.PN.String(), w.family.JID.String(), "notices")
}

// link links wa to Ann's account by pairing code, as a user without a
// camera at hand does: `phonebridge link wa --phone +1555…` prints the
// code, and Ann types it on her phone.
func (w *e2eWorld) link(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.bin, "link", "wa", "--phone", "+"+w.ann.PN.User, "-c", w.cfg)
	cmd.Env = append(os.Environ(), w.env...)
	var errOut daemontest.SyncBuffer
	cmd.Stderr = &errOut
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out daemontest.SyncBuffer
	codes := make(chan string, 1)
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out.Write([]byte(sc.Text() + "\n"))
			if code := pairingCodeLine.FindStringSubmatch(sc.Text()); code != nil {
				select {
				case codes <- code[1]:
				default:
				}
			}
		}
	}()
	select {
	case code := <-codes:
		if _, err := w.ann.EnterPairingCode(ctx, code); err != nil {
			t.Fatalf("Ann typed the code %s: %v\nstdout:\n%s", code, err, out.String())
		}
	case <-read:
		cmd.Wait()
		t.Fatalf("phonebridge link showed no pairing code:\nstdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}
	<-read
	if err := cmd.Wait(); err != nil {
		t.Fatalf("phonebridge link: %v\nstdout:\n%s\nstderr:\n%s\n%s", err, out.String(), errOut.String(), w.d.Logs())
	}
	if want := "Linked wa to +" + w.ann.PN.User; !strings.Contains(out.String(), want) {
		t.Errorf("phonebridge link says\n%s\nwant %q", out.String(), want)
	}
}

// pairingCodeLine is the line of `phonebridge link --phone` that holds
// the code, indented on its own.
var pairingCodeLine = regexp.MustCompile(`^\s+([A-Z0-9]{4}-[A-Z0-9]{4})\s*$`)

// links is what `phonebridge links` says of wa.
func (w *e2eWorld) links(t *testing.T) string {
	t.Helper()
	out, errOut, code := daemontest.RunCommand(t, w.bin, "links", "-c", w.cfg)
	if code != 0 {
		t.Fatalf("phonebridge links: %d\n%s%s", code, out, errOut)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "wa ") {
			return l
		}
	}
	t.Fatalf("phonebridge links lists no wa:\n%s", out)
	return ""
}

// status is the running daemon's `phonebridge status --json`.
func (w *e2eWorld) status(t *testing.T) control.StatusReport {
	t.Helper()
	out, errOut, code := daemontest.RunCommand(t, w.bin, "status", "--json", "-c", w.cfg)
	if code != 0 {
		t.Fatalf("phonebridge status: %d\n%s%s", code, out, errOut)
	}
	var st control.StatusReport
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("phonebridge status --json: %v\n%s", err, out)
	}
	return st
}

// waitFor polls ok (a question to the daemon or a server) until it holds.
func (w *e2eWorld) waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(e2eWait)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s\n%s", e2eWait, what, w.d.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ghost is the Matrix user that speaks for a WhatsApp user.
func ghost(jid types.JID) id.UserID {
	return id.NewUserID("wa_"+strings.ReplaceAll(jid.String(), "@", "=40"), "localhost")
}

// bot is the appservice's own user.
const bot = id.UserID("@phonebridgebot:localhost")

// phoneGets waits for a message the phone received that match takes.
func (w *e2eWorld) phoneGets(t *testing.T, p *fakewa.Phone, what string, match func(fakewa.Message) bool) fakewa.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
	defer cancel()
	m, err := p.WaitMessage(ctx, func(m fakewa.Message) bool { return m.Err == nil && m.Msg != nil && match(m) })
	if err != nil {
		var got []string
		for _, m := range p.Messages() {
			got = append(got, fmt.Sprintf("%s %s %q err=%v", m.ID, m.Chat, m.Text(), m.Err))
		}
		t.Fatalf("%s's phone got no %s within %v; it got:\n%s\n%s", p.PushName, what, e2eWait, strings.Join(got, "\n"), w.d.Logs())
	}
	return m
}

// fromBridge says a phone's message came from Ann's linked device (the
// daemon), in chat.
func (w *e2eWorld) fromBridge(m fakewa.Message, chat types.JID) bool {
	return m.From.User == w.ann.PN.User && m.From.Device != 0 && m.Chat == chat
}

// phoneSend is a phone sending msg to to, failing the test on error.
func phoneSend(t *testing.T, p *fakewa.Phone, to types.JID, msg *waE2E.Message) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), e2eWait)
	defer cancel()
	msgID, err := p.Send(ctx, to, msg)
	if err != nil {
		t.Fatalf("%s's phone cannot send to %s: %v", p.PushName, to, err)
	}
	return msgID
}

func text(s string) *waE2E.Message { return &waE2E.Message{Conversation: proto.String(s)} }

// matrixMsg matches an m.room.message in room from sender whose body
// contains body.
func matrixMsg(room id.RoomID, sender id.UserID, body string) func(*event.Event) bool {
	return func(evt *event.Event) bool {
		if evt.RoomID != room || evt.Sender != sender || evt.Type != event.EventMessage {
			return false
		}
		m := evt.Content.AsMessage()
		return strings.Contains(m.Body, body) && (m.NewContent == nil || body == "")
	}
}

// ircLine matches what the bridge said in channel, containing text.
func ircLine(channel, text string) func(string) bool {
	return func(l string) bool {
		return strings.HasPrefix(l, ":wabridge!") && strings.Contains(l, " "+channel+" :") && strings.Contains(l, text)
	}
}

// watchChannels is nick in the channels on the IRC server at addr,
// recording every line.
func watchChannels(t *testing.T, addr, nick string, channels ...string) *ircStream {
	t.Helper()
	p := daemontest.DialIRC(t, addr, nick, channels[0])
	for _, ch := range channels[1:] {
		p.Send("JOIN " + ch)
		p.Await(t, func(l string) bool { return strings.Contains(l, " JOIN ") && strings.Contains(l, ch) })
	}
	s := &ircStream{send: p.Send}
	go func() {
		for line := range p.Lines() {
			s.mu.Lock()
			s.lines = append(s.lines, line)
			s.mu.Unlock()
		}
	}()
	return s
}

// lineBefore is the line just before the first that match takes.
func (s *ircStream) lineBefore(match func(string) bool) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, l := range s.lines {
		if match(l) && i > 0 {
			return s.lines[i-1]
		}
	}
	return ""
}

// waAPI is an API client recording every delivered event.
type waAPI struct {
	c       *daemontest.Client
	mu      sync.Mutex
	frames  []daemontest.Frame
	changed chan struct{}
}

func dialWAAPI(t *testing.T, addr string, chats ...string) *waAPI {
	t.Helper()
	c, err := daemontest.Dial(addr, daemontest.Token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for _, chat := range chats {
		if err := c.Subscribe(chat, 0); err != nil {
			t.Fatal(err)
		}
	}
	a := &waAPI{c: c, changed: make(chan struct{})}
	go func() {
		for {
			select {
			case f := <-c.Events:
				a.mu.Lock()
				a.frames = append(a.frames, f)
				close(a.changed)
				a.changed = make(chan struct{})
				a.mu.Unlock()
			case <-c.Closed:
				return
			}
		}
	}()
	return a
}

// await waits for a delivered event in chat that match takes.
func (a *waAPI) await(t *testing.T, what, chat string, match func(*daemontest.WireEvent) bool) *daemontest.WireEvent {
	t.Helper()
	deadline := time.NewTimer(e2eWait)
	defer deadline.Stop()
	seen := 0
	for {
		a.mu.Lock()
		for ; seen < len(a.frames); seen++ {
			if f := a.frames[seen]; f.Chat == chat && f.Event != nil && match(f.Event) {
				a.mu.Unlock()
				return f.Event
			}
		}
		changed := a.changed
		a.mu.Unlock()
		select {
		case <-changed:
		case <-a.c.Closed:
			t.Fatalf("the API connection closed waiting for %s: %v", what, a.c.Err())
		case <-deadline.C:
			t.Fatalf("the API got no %s in %s within %v", what, chat, e2eWait)
		}
	}
}

// count is how many delivered events in chat match takes.
func (a *waAPI) count(chat string, match func(*daemontest.WireEvent) bool) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, f := range a.frames {
		if f.Chat == chat && f.Event != nil && match(f.Event) {
			n++
		}
	}
	return n
}

// send submits ev as an API client and waits for its ack.
func (a *waAPI) send(t *testing.T, ev daemontest.WireEvent) {
	t.Helper()
	if err := a.c.Send(ev.ID, ev); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-a.c.Acks:
		if f.Type != "ack" || f.ID != ev.ID {
			t.Fatalf("API send %s: %+v", ev.ID, f)
		}
	case <-time.After(e2eWait):
		t.Fatalf("API send %s: no ack", ev.ID)
	}
}

// getBytes fetches url (with the API token when it is the API's).
func getBytes(t *testing.T, url string) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+daemontest.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return data
}

// noisyBytes are n bytes no compression shrinks, different each run.
func noisyBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

// pngBytes is a real PNG of a few KB, different each run: noise does not
// compress.
func pngBytes(t *testing.T) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, 32, 32))
	for i := range img.Pix {
		img.Pix[i] = byte(rand.Uint32())
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// mediaLink finds a link to the media server in an IRC line.
func (w *e2eWorld) mediaLink(line string) string {
	return regexp.MustCompile(`http://` + regexp.QuoteMeta(w.mediaAddr) + `/\S+`).FindString(line)
}

// redact has the owner redact evt in room. Dendrite does not push
// redactions to appservices (element-hq/dendrite PR 3445; Synapse does),
// so the redaction is then handed to the daemon's appservice as the
// homeserver would.
func (w *e2eWorld) redact(t *testing.T, room id.RoomID, target id.EventID) {
	t.Helper()
	resp, err := w.owner.Client.RedactEvent(t.Context(), room, target)
	if err != nil {
		t.Fatal(err)
	}
	txn := fmt.Sprintf(`{"events":[{"type":"m.room.redaction","event_id":%q,"room_id":%q,"sender":%q,"origin_server_ts":%d,"redacts":%q,"content":{"redacts":%q}}]}`,
		resp.EventID, room, w.owner.ID, time.Now().UnixMilli(), target, target)
	w.pushTransaction(t, "redact-"+string(resp.EventID), txn)
}

// pushTransaction hands the daemon's appservice a transaction as the
// homeserver would, for what Dendrite 0.13.8 does not push itself.
func (w *e2eWorld) pushTransaction(t *testing.T, txnID, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+w.asListen+"/_matrix/app/v1/transactions/"+txnID, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+w.hsToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("the transaction %s: %s", txnID, res.Status)
	}
}

// ownerSaysAs has the owner send an event of type typ in room and
// returns its id.
func (w *e2eWorld) ownerSaysAs(t *testing.T, room id.RoomID, typ event.Type, content any) id.EventID {
	t.Helper()
	resp, err := w.owner.Client.SendMessageEvent(t.Context(), room, typ, content)
	if err != nil {
		t.Fatal(err)
	}
	return resp.EventID
}

// ownerSays has the owner send content in room and returns its event id.
func (w *e2eWorld) ownerSays(t *testing.T, room id.RoomID, content any) id.EventID {
	t.Helper()
	return w.ownerSaysAs(t, room, event.EventMessage, content)
}

// protocolOf is the protocol message (edit, revoke) a phone received,
// whatever envelope it came in.
func protocolOf(m fakewa.Message) *waE2E.ProtocolMessage {
	if p := m.Msg.GetEditedMessage().GetMessage().GetProtocolMessage(); p != nil {
		return p
	}
	return m.Msg.GetProtocolMessage()
}

// TestWhatsAppEndToEnd links the real binary to Ann's fake phone and
// relays, both ways, between phones and Matrix, IRC and the API: text
// with formatting, media, replies, edits, deletes and reactions in Bob's
// chat and in Family; messages Ann sends from her phone; then Ann removes
// the device on her phone, messages wait, and linking again delivers
// them once, in order.
func TestWhatsAppEndToEnd(t *testing.T) {
	start := time.Now()
	w := newE2EWorld(t)
	w.start(t)
	if l := w.links(t); !strings.Contains(l, "unlinked") {
		t.Errorf("before linking, phonebridge links says %q, want unlinked", l)
	}
	w.link(t)
	// Connected, with Ann's name from her phone's app state.
	w.waitFor(t, "wa connected as Ann", func() bool {
		l := w.links(t)
		return strings.Contains(l, " connected ") && strings.Contains(l, " Ann ")
	})
	// A group's portal is made once the account is linked; Ann accepts
	// its invite.
	familyRoom := w.owner.AcceptInvite(t, "Family", e2eWait)
	t.Logf("set up and linked in %v", time.Since(start).Round(time.Millisecond))

	// Each step acts on what the ones before made, so a failed step
	// ends the test.
	bobChat, familyChat := w.bob.PN.String(), w.family.JID.String()
	bobGhost, eveGhost := ghost(w.bob.PN), ghost(w.eve.PN)
	var bobRoom id.RoomID
	// Ids the later steps act on.
	var ownerHTML, ownerDinner fakewa.Message // the owner's Matrix messages as phones got them
	var ownerHTMLEvent, ownerDinnerEvent id.EventID
	var ownerHTMLAPI string

	if !t.Run("text with formatting", func(t *testing.T) {
		styled := "*bold* _italic_ ~strike~ ```code```"
		face := pngBytes(t)
		w.bob.SetPicture(face)
		phoneSend(t, w.bob, w.ann.PN, text(styled))
		bobRoom = w.owner.AcceptInvite(t, "Bob", e2eWait)
		m := w.owner.Await(t, "Bob's styled message", e2eWait, matrixMsg(bobRoom, bobGhost, "bold")).Content.AsMessage()
		if m.Body != styled || m.Format != event.FormatHTML || m.FormattedBody != "<b>bold</b> <i>italic</i> <s>strike</s> <code>code</code>" {
			t.Errorf("Matrix shows Bob's message as %q / %q", m.Body, m.FormattedBody)
		}
		if dn, err := w.owner.Client.GetDisplayName(t.Context(), bobGhost); err != nil || dn.DisplayName != "Bob (WhatsApp)" {
			t.Errorf("Bob's ghost is called %+v (%v), want Bob (WhatsApp)", dn, err)
		}
		// His profile picture, fetched from WhatsApp's picture host.
		var avatar id.ContentURI
		w.waitFor(t, "Bob's ghost to have his picture", func() bool {
			avatar, _ = w.owner.Client.GetAvatarURL(t.Context(), bobGhost)
			return !avatar.IsEmpty()
		})
		if got, err := w.owner.Client.DownloadBytes(t.Context(), avatar); err != nil || !bytes.Equal(got, face) {
			t.Errorf("Bob's ghost's picture is %d bytes (%v), want the %d of his profile picture", len(got), err, len(face))
		}
		if l := w.carol.awaitLine(t, 0, e2eWait, ircLine("#bob", "bold"), w.d); !strings.HasSuffix(l, " PRIVMSG #bob :<B\u200dob> \x02bold\x02 \x1ditalic\x1d \x1estrike\x1e \x11code\x11") {
			t.Errorf("IRC shows Bob's message as %q", l)
		}
		ev := w.api.await(t, "Bob's styled message", bobChat, func(ev *daemontest.WireEvent) bool { return strings.Contains(ev.Text, "bold") })
		if ev.Text != styled || ev.HTML != "<b>bold</b> <i>italic</i> <s>strike</s> <code>code</code>" || ev.Sender == nil || ev.Sender.Name != "Bob" || ev.Sender.ID != bobChat {
			t.Errorf("the API got Bob's message as %+v from %+v", ev, ev.Sender)
		}

		// Matrix's HTML reaches the phone as WhatsApp's markup; the owner
		// writes as herself, so without a name in front.
		ownerHTMLEvent = w.ownerSays(t, bobRoom, &event.MessageEventContent{MsgType: event.MsgText, Body: "loud, soft, gone and x := 1",
			Format: event.FormatHTML, FormattedBody: "<strong>loud</strong>, <em>soft</em>, <del>gone</del> and <code>x := 1</code>"})
		ownerHTML = w.phoneGets(t, w.bob, "the owner's formatted message", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.ann.PN) && strings.Contains(m.Text(), "loud")
		})
		if got := ownerHTML.Text(); got != "*loud*, _soft_, ~gone~ and `x := 1`" {
			t.Errorf("Bob's phone got the owner's message as %q", got)
		}
		ownerHTMLAPI = w.api.await(t, "the owner's formatted message", bobChat, func(ev *daemontest.WireEvent) bool { return strings.Contains(ev.Text, "loud") }).ID

		// IRC's codes too, with the IRC nick in front.
		w.carol.send("PRIVMSG #bob :\x02shout\x02 and \x1dwhisper\x1d")
		got := w.phoneGets(t, w.bob, "Carol's IRC message", func(m fakewa.Message) bool { return w.fromBridge(m, w.ann.PN) && strings.Contains(m.Text(), "shout") })
		if got.Text() != "*carol*: *shout* and _whisper_" {
			t.Errorf("Bob's phone got Carol's IRC message as %q", got.Text())
		}

		// In the group: Eve's message reaches its portal, #family and the
		// API; the owner's reaches both phones.
		phoneSend(t, w.eve, w.family.JID, text("_hi_ all"))
		if m := w.owner.Await(t, "Eve's message in Family", e2eWait, matrixMsg(familyRoom, eveGhost, "hi")).Content.AsMessage(); m.FormattedBody != "<i>hi</i> all" {
			t.Errorf("Matrix shows Eve's message as %q / %q", m.Body, m.FormattedBody)
		}
		if l := w.carol.awaitLine(t, 0, e2eWait, ircLine("#family", "hi"), w.d); !strings.HasSuffix(l, " PRIVMSG #family :<E\u200dve> \x1dhi\x1d all") {
			t.Errorf("IRC shows Eve's message as %q", l)
		}
		if ev := w.api.await(t, "Eve's message", familyChat, func(ev *daemontest.WireEvent) bool { return strings.Contains(ev.Text, "hi") }); ev.HTML != "<i>hi</i> all" || ev.Sender == nil || ev.Sender.Name != "Eve" {
			t.Errorf("the API got Eve's message as %+v", ev)
		}
		// Bob in the group is the same ghost as in his own chat, though
		// WhatsApp names him by LID there and by number here.
		phoneSend(t, w.bob, w.family.JID, text("count me in"))
		w.owner.Await(t, "Bob's message in Family", e2eWait, matrixMsg(familyRoom, bobGhost, "count me in"))
		w.carol.awaitLine(t, 0, e2eWait, ircLine("#family", "<B\u200dob> count me in"), w.d)
		if ev := w.api.await(t, "Bob's message in Family", familyChat, func(ev *daemontest.WireEvent) bool { return ev.Text == "count me in" }); ev.Sender == nil || ev.Sender.ID != bobChat {
			t.Errorf("the API got Bob's group message from %+v, want %s", ev.Sender, bobChat)
		}
		ownerDinnerEvent = w.ownerSays(t, familyRoom, &event.MessageEventContent{MsgType: event.MsgText, Body: "dinner at 8",
			Format: event.FormatHTML, FormattedBody: "<b>dinner</b> at 8"})
		for _, p := range []*fakewa.Phone{w.bob, w.eve} {
			m := w.phoneGets(t, p, "the owner's group message", func(m fakewa.Message) bool {
				return w.fromBridge(m, w.family.JID) && strings.Contains(m.Text(), "dinner")
			})
			if m.Text() != "*dinner* at 8" {
				t.Errorf("%s's phone got %q, want *dinner* at 8", p.PushName, m.Text())
			}
			if p == w.eve {
				ownerDinner = m
			}
		}
	}) {
		return
	}

	if !t.Run("media", func(t *testing.T) {
		ctx := t.Context()
		// A phone's picture: Matrix downloads the very bytes, IRC gets a
		// link to the media server that serves them, the API too.
		pic := pngBytes(t)
		info, err := w.srv.EncryptMedia(pic, whatsmeow.MediaImage)
		if err != nil {
			t.Fatal(err)
		}
		phoneSend(t, w.bob, w.ann.PN, &waE2E.Message{ImageMessage: info.Image("image/png", "the garden")})
		img := w.owner.Await(t, "Bob's picture", e2eWait, func(evt *event.Event) bool {
			return evt.RoomID == bobRoom && evt.Sender == bobGhost && evt.Type == event.EventMessage && evt.Content.AsMessage().MsgType == event.MsgImage
		}).Content.AsMessage()
		if img.GetCaption() != "the garden" || img.Info == nil || img.Info.MimeType != "image/png" || img.Info.Size != len(pic) {
			t.Errorf("Matrix shows Bob's picture as %q (caption %q) with %+v", img.Body, img.GetCaption(), img.Info)
		}
		uri, err := img.URL.Parse()
		if err != nil {
			t.Fatalf("the picture's URL %q: %v", img.URL, err)
		}
		if got, err := w.owner.Client.DownloadBytes(ctx, uri); err != nil || !bytes.Equal(got, pic) {
			t.Errorf("Matrix serves %d bytes (%v) for Bob's picture, want the %d he sent", len(got), err, len(pic))
		}
		line := w.carol.awaitLine(t, 0, e2eWait, ircLine("#bob", "http://"+w.mediaAddr), w.d)
		if !strings.Contains(line, "<B\u200dob> [image: image.png, ") {
			t.Errorf("IRC shows Bob's picture as %q", line)
		}
		w.carol.awaitLine(t, 0, e2eWait, ircLine("#bob", "<B\u200dob> the garden"), w.d)
		if link := w.mediaLink(line); link == "" || !bytes.Equal(getBytes(t, link), pic) {
			t.Errorf("IRC's line %q does not link to Bob's picture", line)
		}
		ev := w.api.await(t, "Bob's picture", bobChat, func(ev *daemontest.WireEvent) bool { return len(ev.Media) > 0 })
		if len(ev.Media) != 1 || ev.Text != "the garden" || ev.Media[0].MIME != "image/png" || !bytes.Equal(getBytes(t, "http://"+w.apiAddr+ev.Media[0].URL), pic) {
			t.Errorf("the API got Bob's picture as %+v", ev.Media)
		}

		// The owner's file reaches the phone, which decrypts the same bytes.
		doc := append([]byte("%PDF-1.4\n"), noisyBytes(3000)...)
		up, err := w.owner.Client.UploadBytesWithName(ctx, doc, "application/pdf", "report.pdf")
		if err != nil {
			t.Fatal(err)
		}
		w.ownerSays(t, bobRoom, &event.MessageEventContent{MsgType: event.MsgFile, Body: "report.pdf", FileName: "report.pdf",
			URL: up.ContentURI.CUString(), Info: &event.FileInfo{MimeType: "application/pdf", Size: len(doc)}})
		got := w.phoneGets(t, w.bob, "the owner's file", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.ann.PN) && m.Msg.GetDocumentMessage() != nil
		})
		dm := got.Msg.GetDocumentMessage()
		if dm.GetFileName() != "report.pdf" || dm.GetMimetype() != "application/pdf" || dm.GetCaption() != "" {
			t.Errorf("Bob's phone got the owner's file as %q, %q, caption %q", dm.GetFileName(), dm.GetMimetype(), dm.GetCaption())
		}
		if data, err := w.srv.DownloadMedia(ctx, got.Attachment()); err != nil || !bytes.Equal(data, doc) {
			t.Errorf("Bob's phone decrypts %d bytes (%v) of the owner's file, want the %d she uploaded", len(data), err, len(doc))
		}

		// In the group, Eve decrypts the owner's picture.
		pic2 := pngBytes(t)
		up, err = w.owner.Client.UploadBytesWithName(ctx, pic2, "image/png", "table.png")
		if err != nil {
			t.Fatal(err)
		}
		w.ownerSays(t, familyRoom, &event.MessageEventContent{MsgType: event.MsgImage, Body: "the table is set", FileName: "table.png",
			URL: up.ContentURI.CUString(), Info: &event.FileInfo{MimeType: "image/png", Size: len(pic2)}})
		got = w.phoneGets(t, w.eve, "the owner's picture in Family", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.family.JID) && m.Msg.GetImageMessage() != nil
		})
		if c := got.Msg.GetImageMessage().GetCaption(); c != "the table is set" {
			t.Errorf("Eve's phone got the owner's picture captioned %q", c)
		}
		if data, err := w.srv.DownloadMedia(ctx, got.Attachment()); err != nil || !bytes.Equal(data, pic2) {
			t.Errorf("Eve's phone decrypts %d bytes (%v) of the owner's picture, want the %d she uploaded", len(data), err, len(pic2))
		}
	}) {
		return
	}

	if !t.Run("voice notes and places", func(t *testing.T) {
		ctx := t.Context()
		// Bob's voice note: a voice message on Matrix with its length and
		// waveform, named for what it is on IRC, its kind on the API.
		voice := append([]byte("OggS"), noisyBytes(2000)...)
		info, err := w.srv.EncryptMedia(voice, whatsmeow.MediaAudio)
		if err != nil {
			t.Fatal(err)
		}
		am := info.Audio("audio/ogg; codecs=opus", true)
		am.Seconds, am.Waveform = proto.Uint32(7), bytes.Repeat([]byte{50}, 64)
		phoneSend(t, w.bob, w.ann.PN, &waE2E.Message{AudioMessage: am})
		vm := w.owner.Await(t, "Bob's voice note", e2eWait, func(evt *event.Event) bool {
			return evt.RoomID == bobRoom && evt.Sender == bobGhost && evt.Type == event.EventMessage && evt.Content.AsMessage().MsgType == event.MsgAudio
		}).Content.AsMessage()
		if vm.MSC3245Voice == nil || vm.MSC1767Audio == nil || vm.MSC1767Audio.Duration != 7000 || len(vm.MSC1767Audio.Waveform) != 64 || vm.Info == nil || vm.Info.Duration != 7000 {
			t.Errorf("Matrix shows Bob's voice note as %+v (voice %v, audio %+v)", vm.Info, vm.MSC3245Voice, vm.MSC1767Audio)
		}
		w.carol.awaitLine(t, 0, e2eWait, ircLine("#bob", "<B\u200dob> [voice message: voice.ogg, 0:07, "), w.d)
		ev := w.api.await(t, "Bob's voice note", bobChat, func(ev *daemontest.WireEvent) bool { return len(ev.Media) > 0 && ev.Media[0].Kind == "voice" })
		if m := ev.Media[0]; m.DurationMS != 7000 || len(m.Waveform) != 64 || m.Waveform[0] != 512 {
			t.Errorf("the API got Bob's voice note as %+v", m)
		}

		// Bob's place: a map on Matrix, a map link on IRC, coordinates on
		// the API.
		phoneSend(t, w.bob, w.ann.PN, &waE2E.Message{LocationMessage: &waE2E.LocationMessage{
			DegreesLatitude: proto.Float64(52.5163), DegreesLongitude: proto.Float64(13.3777), Name: proto.String("Brandenburger Tor"),
		}})
		loc := w.owner.Await(t, "Bob's place", e2eWait, func(evt *event.Event) bool {
			return evt.RoomID == bobRoom && evt.Sender == bobGhost && evt.Type == event.EventMessage && evt.Content.AsMessage().MsgType == event.MsgLocation
		}).Content.AsMessage()
		if loc.GeoURI != "geo:52.5163,13.3777" {
			t.Errorf("Matrix shows Bob's place at %q", loc.GeoURI)
		}
		w.carol.awaitLine(t, 0, e2eWait, ircLine("#bob", "Brandenburger Tor"), w.d)
		w.carol.awaitLine(t, 0, e2eWait, ircLine("#bob", "https://maps.google.com/?q=52.5163,13.3777"), w.d)
		place := w.api.await(t, "Bob's place", bobChat, func(ev *daemontest.WireEvent) bool { return ev.Location != nil })
		if l := place.Location; l.Latitude != 52.5163 || l.Longitude != 13.3777 || l.Name != "Brandenburger Tor" {
			t.Errorf("the API got Bob's place as %+v", l)
		}

		// The owner's voice message reaches the phone as a voice note, and
		// her place as a location.
		up, err := w.owner.Client.UploadBytesWithName(ctx, voice, "audio/ogg", "memo.ogg")
		if err != nil {
			t.Fatal(err)
		}
		w.ownerSays(t, bobRoom, map[string]any{"msgtype": "m.audio", "body": "memo.ogg", "url": up.ContentURI.CUString(),
			"info":                     map[string]any{"mimetype": "audio/ogg", "size": len(voice), "duration": 3000},
			"org.matrix.msc3245.voice": map[string]any{}, "org.matrix.msc1767.audio": map[string]any{"duration": 3000, "waveform": []int{0, 1024}}})
		got := w.phoneGets(t, w.bob, "the owner's voice message", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.ann.PN) && m.Msg.GetAudioMessage() != nil
		})
		if a := got.Msg.GetAudioMessage(); !a.GetPTT() || a.GetSeconds() != 3 || len(a.GetWaveform()) != 64 {
			t.Errorf("Bob's phone got the owner's voice message as %v", a)
		}
		w.ownerSays(t, bobRoom, map[string]any{"msgtype": "m.location", "body": "here", "geo_uri": "geo:48.8584,2.2945"})
		got = w.phoneGets(t, w.bob, "the owner's place", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.ann.PN) && m.Msg.GetLocationMessage() != nil
		})
		if l := got.Msg.GetLocationMessage(); l.GetDegreesLatitude() != 48.8584 || l.GetDegreesLongitude() != 2.2945 {
			t.Errorf("Bob's phone got the owner's place as %v", l)
		}
	}) {
		return
	}

	if !t.Run("mentions", func(t *testing.T) {
		// Bob mentions the owner and Eve in Family: pills to the owner and
		// to Eve's ghost on Matrix, names on IRC and the API.
		phoneSend(t, w.bob, w.family.JID, &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
			Text:        proto.String("@" + w.ann.PN.User + " and @" + w.eve.PN.User + " dinner?"),
			ContextInfo: &waE2E.ContextInfo{MentionedJID: []string{w.ann.PN.String(), w.eve.PN.String()}},
		}})
		m := w.owner.Await(t, "Bob's mentions", e2eWait, func(evt *event.Event) bool {
			return evt.RoomID == familyRoom && evt.Sender == bobGhost && strings.HasSuffix(evt.Content.AsMessage().Body, "dinner?")
		}).Content.AsMessage()
		if m.Body != "@Ann and @Eve dinner?" || m.Mentions == nil || !m.Mentions.Has(w.owner.ID) || !m.Mentions.Has(eveGhost) ||
			!strings.Contains(m.FormattedBody, `href="https://matrix.to/#/`+string(w.owner.ID)+`">@Ann</a>`) {
			t.Errorf("Matrix shows Bob's mentions as %q / %q, mentioning %+v", m.Body, m.FormattedBody, m.Mentions)
		}
		w.carol.awaitLine(t, 0, e2eWait, ircLine("#family", "@Ann and @Eve dinner?"), w.d)
		ev := w.api.await(t, "Bob's mentions", familyChat, func(ev *daemontest.WireEvent) bool { return strings.HasSuffix(ev.Text, "dinner?") })
		if ev.Text != "@Ann and @Eve dinner?" {
			t.Errorf("the API got %q", ev.Text)
		}

		// The owner's pill to Bob's ghost reaches the phones as an
		// @-mention of Bob.
		w.ownerSays(t, familyRoom, map[string]any{"msgtype": "m.text", "body": "Bob (WhatsApp): yes",
			"format": "org.matrix.custom.html", "formatted_body": `<a href="https://matrix.to/#/` + string(bobGhost) + `">Bob (WhatsApp)</a>: yes`})
		got := w.phoneGets(t, w.eve, "the owner's mention of Bob", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.family.JID) && strings.HasSuffix(m.Text(), ": yes")
		})
		ext := got.Msg.GetExtendedTextMessage()
		if ext.GetText() != "@"+w.bob.PN.User+": yes" || !slices.Equal(ext.GetContextInfo().GetMentionedJID(), []string{w.bob.PN.String()}) {
			t.Errorf("Eve's phone got the owner's mention as %q mentioning %v", ext.GetText(), ext.GetContextInfo().GetMentionedJID())
		}
	}) {
		return
	}

	if !t.Run("polls and votes", func(t *testing.T) {
		ctx := t.Context()
		// Bob asks Family a poll: an MSC3381 poll on Matrix, numbered
		// options on IRC, a poll on the API.
		pollID := phoneSend(t, w.bob, w.family.JID, &waE2E.Message{
			PollCreationMessage: &waE2E.PollCreationMessage{Name: proto.String("Lunch?"), SelectableOptionsCount: proto.Uint32(1),
				Options: []*waE2E.PollCreationMessage_Option{{OptionName: proto.String("Pizza")}, {OptionName: proto.String("Sushi")}}},
			MessageContextInfo: &waE2E.MessageContextInfo{MessageSecret: bytes.Repeat([]byte{7}, 32)},
		})
		poll := w.owner.Await(t, "Bob's poll", e2eWait, func(evt *event.Event) bool {
			return evt.RoomID == familyRoom && evt.Sender == bobGhost && evt.Type == event.EventUnstablePollStart
		})
		w.carol.awaitLine(t, 0, e2eWait, ircLine("#family", "2. Sushi"), w.d)
		if ev := w.api.await(t, "Bob's poll", familyChat, func(ev *daemontest.WireEvent) bool { return ev.Poll != nil }); ev.Poll.Question != "Lunch?" {
			t.Errorf("the API got Bob's poll as %+v", ev.Poll)
		}

		// Eve votes on her phone: her ghost votes on Matrix; IRC and the
		// API get the vote with the count.
		if _, err := w.eve.Vote(ctx, w.family.JID, pollID, "Sushi"); err != nil {
			t.Fatal(err)
		}
		vote := w.owner.Await(t, "Eve's vote", e2eWait, func(evt *event.Event) bool {
			return evt.RoomID == familyRoom && evt.Sender == eveGhost && evt.Type == event.EventUnstablePollResponse
		})
		rel, _ := vote.Content.Raw["m.relates_to"].(map[string]any)
		resp, _ := vote.Content.Raw["org.matrix.msc3381.poll.response"].(map[string]any)
		if rel["event_id"] != string(poll.ID) || fmt.Sprint(resp["answers"]) != "[2]" {
			t.Errorf("Matrix shows Eve's vote as %v", vote.Content.Raw)
		}
		w.carol.awaitLine(t, 0, e2eWait, ircLine("#family", "NOTICE #family :E\u200dve voted for “Sushi” in “Lunch?” (Pizza 0 · Sushi 1)"), w.d)
		if ev := w.api.await(t, "Eve's vote", familyChat, func(ev *daemontest.WireEvent) bool { return ev.Kind == "vote" }); ev.Vote == nil ||
			fmt.Sprint(ev.Vote.Choices, ev.Vote.Tally) != "[1] [0 1]" {
			t.Errorf("the API got Eve's vote as %+v", ev.Vote)
		}

		// The owner votes on Matrix: the account's own vote, sealed with
		// the poll's secret, which Bob's phone opens.
		w.ownerSaysAs(t, familyRoom, event.EventUnstablePollResponse, map[string]any{
			"m.relates_to":                     map[string]any{"rel_type": "m.reference", "event_id": string(poll.ID)},
			"org.matrix.msc3381.poll.response": map[string]any{"answers": []string{"1"}}})
		got := w.phoneGets(t, w.bob, "the owner's vote", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.family.JID) && m.Msg.GetPollUpdateMessage() != nil
		})
		if picked, err := w.bob.ReadVote(got); err != nil || !slices.Equal(picked, []string{"Pizza"}) {
			t.Errorf("Bob's phone reads the owner's vote as %v (%v), want [Pizza]", picked, err)
		}
	}) {
		return
	}

	// What the phone's messages become elsewhere, and what it receives.
	var mat fakewa.Message // Bob's reply "under the mat"
	var matEvent id.EventID
	var matAPI string
	if !t.Run("replies edits deletes reactions from the phone", func(t *testing.T) {
		keysID := phoneSend(t, w.bob, w.ann.PN, text("where are the keys?"))
		keysEvent := w.owner.Await(t, "Bob's question", e2eWait, matrixMsg(bobRoom, bobGhost, "where are the keys?")).ID
		keysAPI := w.api.await(t, "Bob's question", bobChat, func(ev *daemontest.WireEvent) bool { return ev.Text == "where are the keys?" }).ID
		w.carol.awaitLine(t, 0, e2eWait, ircLine("#bob", "where are the keys?"), w.d)

		// A reply.
		matID := phoneSend(t, w.bob, w.ann.PN, &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
			Text: proto.String("under the mat"),
			ContextInfo: &waE2E.ContextInfo{StanzaID: proto.String(keysID), Participant: proto.String(bobChat),
				QuotedMessage: text("where are the keys?")},
		}})
		mat = fakewa.Message{ID: matID}
		reply := w.owner.Await(t, "Bob's reply", e2eWait, matrixMsg(bobRoom, bobGhost, "under the mat"))
		matEvent = reply.ID
		if rel := reply.Content.AsMessage().RelatesTo; rel == nil || rel.GetReplyTo() != keysEvent {
			t.Errorf("Bob's reply relates in Matrix to %+v, want a reply to %s", rel, keysEvent)
		}
		ev := w.api.await(t, "Bob's reply", bobChat, func(ev *daemontest.WireEvent) bool { return ev.Text == "under the mat" })
		matAPI = ev.ID
		if ev.ReplyTo != keysAPI {
			t.Errorf("the API got Bob's reply to %q, want %q", ev.ReplyTo, keysAPI)
		}
		// IRC has no replies: a quote of the question comes first.
		w.carol.awaitLine(t, 0, e2eWait, ircLine("#bob", "under the mat"), w.d)
		if prev := w.carol.lineBefore(ircLine("#bob", "under the mat")); !strings.HasSuffix(prev, "PRIVMSG #bob :<B\u200dob> > Bob: where are the keys?") {
			t.Errorf("on IRC, Bob's reply follows %q, want a quote of his question", prev)
		}

		// An edit of the question.
		phoneSend(t, w.bob, w.ann.PN, &waE2E.Message{EditedMessage: &waE2E.FutureProofMessage{Message: &waE2E.Message{
			ProtocolMessage: &waE2E.ProtocolMessage{
				Key:           &waCommon.MessageKey{RemoteJID: proto.String(w.ann.PN.String()), FromMe: proto.Bool(true), ID: proto.String(keysID)},
				Type:          waE2E.ProtocolMessage_MESSAGE_EDIT.Enum(),
				EditedMessage: text("where are my keys?"),
				TimestampMS:   proto.Int64(time.Now().UnixMilli()),
			}}}})
		edit := w.owner.Await(t, "Bob's edit", e2eWait, func(evt *event.Event) bool {
			m := evt.Content.AsMessage()
			return evt.RoomID == bobRoom && evt.Sender == bobGhost && m.NewContent != nil && m.NewContent.Body == "where are my keys?"
		})
		if rel := edit.Content.AsMessage().RelatesTo; rel == nil || rel.Type != event.RelReplace || rel.EventID != keysEvent {
			t.Errorf("Bob's edit relates in Matrix to %+v, want a replacement of %s", rel, keysEvent)
		}
		if ev := w.api.await(t, "Bob's edit", bobChat, func(ev *daemontest.WireEvent) bool { return ev.Kind == "edit" }); ev.Target != keysAPI || ev.Text != "where are my keys?" {
			t.Errorf("the API got Bob's edit as %+v, want one of %s", ev, keysAPI)
		}
		// On IRC, a corrected copy after a quote of what it corrects.
		if l := w.carol.awaitLine(t, 0, e2eWait, ircLine("#bob", "where are my keys?"), w.d); !strings.HasSuffix(l, "PRIVMSG #bob :<B\u200dob> ✎ where are my keys?") {
			t.Errorf("IRC shows Bob's edit as %q", l)
		}

		// Reactions: to the owner's message (a message the bridge sent to
		// WhatsApp), and to his own.
		phoneSend(t, w.bob, w.ann.PN, &waE2E.Message{ReactionMessage: &waE2E.ReactionMessage{
			Key:  &waCommon.MessageKey{RemoteJID: proto.String(w.ann.PN.String()), FromMe: proto.Bool(false), ID: proto.String(ownerHTML.ID)},
			Text: proto.String("👍"), SenderTimestampMS: proto.Int64(time.Now().UnixMilli()),
		}})
		r := w.owner.Await(t, "Bob's 👍", e2eWait, func(evt *event.Event) bool {
			return evt.RoomID == bobRoom && evt.Sender == bobGhost && evt.Type == event.EventReaction
		})
		if rel := r.Content.AsReaction().RelatesTo; rel.EventID != ownerHTMLEvent || rel.Key != "👍" {
			t.Errorf("Bob's 👍 reached Matrix as %+v, want one on %s", rel, ownerHTMLEvent)
		}
		if ev := w.api.await(t, "Bob's 👍", bobChat, func(ev *daemontest.WireEvent) bool { return ev.Kind == "reaction" && ev.Emoji == "👍" }); ev.Target != ownerHTMLAPI {
			t.Errorf("the API got Bob's 👍 on %q, want %q", ev.Target, ownerHTMLAPI)
		}
		phoneSend(t, w.bob, w.ann.PN, &waE2E.Message{ReactionMessage: &waE2E.ReactionMessage{
			Key:  &waCommon.MessageKey{RemoteJID: proto.String(w.ann.PN.String()), FromMe: proto.Bool(true), ID: proto.String(matID)},
			Text: proto.String("❤️"), SenderTimestampMS: proto.Int64(time.Now().UnixMilli()),
		}})
		r = w.owner.Await(t, "Bob's ❤️", e2eWait, func(evt *event.Event) bool {
			return evt.RoomID == bobRoom && evt.Sender == bobGhost && evt.Type == event.EventReaction && evt.Content.AsReaction().RelatesTo.Key == "❤️"
		})
		if rel := r.Content.AsReaction().RelatesTo; rel.EventID != matEvent {
			t.Errorf("Bob's ❤️ reached Matrix on %s, want %s", rel.EventID, matEvent)
		}
		if l := w.carol.awaitLine(t, 0, e2eWait, func(l string) bool { return strings.HasPrefix(l, ":wabridge!") && strings.Contains(l, "❤️") }, w.d); !strings.HasSuffix(l, "NOTICE #bob :B\u200dob reacted ❤️ to “under the mat”") {
			t.Errorf("IRC shows Bob's ❤️ as %q", l)
		}

		// A delete for everyone.
		phoneSend(t, w.bob, w.ann.PN, &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{
			Type: waE2E.ProtocolMessage_REVOKE.Enum(),
			Key:  &waCommon.MessageKey{RemoteJID: proto.String(w.ann.PN.String()), FromMe: proto.Bool(true), ID: proto.String(keysID)},
		}})
		red := w.owner.Await(t, "Bob's delete", e2eWait, func(evt *event.Event) bool {
			return evt.RoomID == bobRoom && evt.Type == event.EventRedaction
		})
		if red.Redacts != keysEvent || red.Sender != bobGhost {
			t.Errorf("Bob's delete redacted %s as %s, want %s as his ghost", red.Redacts, red.Sender, keysEvent)
		}
		if ev := w.api.await(t, "Bob's delete", bobChat, func(ev *daemontest.WireEvent) bool { return ev.Kind == "delete" }); ev.Target != keysAPI {
			t.Errorf("the API got Bob's delete of %q, want %q", ev.Target, keysAPI)
		}
	}) {
		return
	}

	if !t.Run("replies edits deletes reactions to the phone", func(t *testing.T) {
		// From Matrix: the owner replies to Bob's reply, edits hers,
		// reacts to his, and deletes hers.
		reply := &event.MessageEventContent{MsgType: event.MsgText, Body: "found them", RelatesTo: (&event.RelatesTo{}).SetReplyTo(matEvent)}
		replyEvent := w.ownerSays(t, bobRoom, reply)
		got := w.phoneGets(t, w.bob, "the owner's reply", func(m fakewa.Message) bool { return w.fromBridge(m, w.ann.PN) && m.Text() == "found them" })
		if ci := got.Msg.GetExtendedTextMessage().GetContextInfo(); ci.GetStanzaID() != mat.ID || ci.GetParticipant() != bobChat {
			t.Errorf("Bob's phone got the owner's reply quoting %q by %q, want his %s", ci.GetStanzaID(), ci.GetParticipant(), mat.ID)
		}
		edit := &event.MessageEventContent{MsgType: event.MsgText, Body: "found them!"}
		edit.SetEdit(replyEvent)
		w.ownerSays(t, bobRoom, edit)
		e := w.phoneGets(t, w.bob, "the owner's edit", func(m fakewa.Message) bool {
			p := protocolOf(m)
			return w.fromBridge(m, w.ann.PN) && p.GetType() == waE2E.ProtocolMessage_MESSAGE_EDIT
		})
		if p := protocolOf(e); p.GetKey().GetID() != got.ID || !p.GetKey().GetFromMe() || p.GetEditedMessage().GetConversation() != "found them!" {
			t.Errorf("Bob's phone got the owner's edit as %v, want one of %s", p, got.ID)
		}
		if _, err := w.owner.Client.SendMessageEvent(t.Context(), bobRoom, event.EventReaction, &event.ReactionEventContent{
			RelatesTo: event.RelatesTo{Type: event.RelAnnotation, EventID: matEvent, Key: "🎉"}}); err != nil {
			t.Fatal(err)
		}
		r := w.phoneGets(t, w.bob, "the owner's 🎉", func(m fakewa.Message) bool { return w.fromBridge(m, w.ann.PN) && m.Msg.GetReactionMessage() != nil })
		if rm := r.Msg.GetReactionMessage(); rm.GetText() != "🎉" || rm.GetKey().GetID() != mat.ID || rm.GetKey().GetFromMe() {
			t.Errorf("Bob's phone got the owner's reaction as %v, want 🎉 on his %s", rm, mat.ID)
		}
		w.redact(t, bobRoom, replyEvent)
		d := w.phoneGets(t, w.bob, "the owner's delete", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.ann.PN) && protocolOf(m) != nil && protocolOf(m).GetType() == waE2E.ProtocolMessage_REVOKE
		})
		if k := protocolOf(d).GetKey(); k.GetID() != got.ID || !k.GetFromMe() {
			t.Errorf("Bob's phone got the owner's delete as %v, want a revoke of %s", k, got.ID)
		}

		// From the API: a message with its sender's name, its edit, a
		// reaction to Bob's reply, and its delete.
		dana := &daemontest.WireSender{ID: "dana", Name: "Dana"}
		w.api.send(t, daemontest.WireEvent{ID: "api-1", Kind: "message", Chat: bobChat, Sender: dana, Text: "from the API"})
		a := w.phoneGets(t, w.bob, "the API's message", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.ann.PN) && strings.Contains(m.Text(), "from the API")
		})
		if a.Text() != "*Dana*: from the API" {
			t.Errorf("Bob's phone got the API's message as %q", a.Text())
		}
		w.api.send(t, daemontest.WireEvent{ID: "api-2", Kind: "edit", Chat: bobChat, Sender: dana, Target: "api-1", Text: "from the API, edited"})
		e = w.phoneGets(t, w.bob, "the API's edit", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.ann.PN) && protocolOf(m) != nil && protocolOf(m).GetType() == waE2E.ProtocolMessage_MESSAGE_EDIT && protocolOf(m).GetKey().GetID() == a.ID
		})
		if p := protocolOf(e); p.GetEditedMessage().GetConversation() != "*Dana*: from the API, edited" {
			t.Errorf("Bob's phone got the API's edit as %v", p)
		}
		w.api.send(t, daemontest.WireEvent{ID: "api-3", Kind: "reaction", Chat: bobChat, Sender: dana, Target: matAPI, Emoji: "👀"})
		r = w.phoneGets(t, w.bob, "the API's 👀", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.ann.PN) && m.Msg.GetReactionMessage().GetText() == "👀"
		})
		if k := r.Msg.GetReactionMessage().GetKey(); k.GetID() != mat.ID || k.GetFromMe() {
			t.Errorf("Bob's phone got the API's 👀 on %v, want his %s", k, mat.ID)
		}
		w.api.send(t, daemontest.WireEvent{ID: "api-4", Kind: "delete", Chat: bobChat, Sender: dana, Target: "api-1"})
		w.phoneGets(t, w.bob, "the API's delete", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.ann.PN) && protocolOf(m) != nil && protocolOf(m).GetType() == waE2E.ProtocolMessage_REVOKE && protocolOf(m).GetKey().GetID() == a.ID
		})

		// In the group: Eve replies to the owner; the owner reacts to
		// Eve's reply, which names Eve.
		eveReplyID := phoneSend(t, w.eve, w.family.JID, &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
			Text: proto.String("I'll bring dessert"),
			ContextInfo: &waE2E.ContextInfo{StanzaID: proto.String(ownerDinner.ID), Participant: proto.String(w.ann.PN.String()),
				QuotedMessage: text("*dinner* at 8")},
		}})
		er := w.owner.Await(t, "Eve's reply", e2eWait, matrixMsg(familyRoom, eveGhost, "dessert"))
		if rel := er.Content.AsMessage().RelatesTo; rel == nil || rel.GetReplyTo() != ownerDinnerEvent {
			t.Errorf("Eve's reply relates in Matrix to %+v, want a reply to %s", rel, ownerDinnerEvent)
		}
		if _, err := w.owner.Client.SendMessageEvent(t.Context(), familyRoom, event.EventReaction, &event.ReactionEventContent{
			RelatesTo: event.RelatesTo{Type: event.RelAnnotation, EventID: er.ID, Key: "🍰"}}); err != nil {
			t.Fatal(err)
		}
		r = w.phoneGets(t, w.eve, "the owner's 🍰", func(m fakewa.Message) bool { return w.fromBridge(m, w.family.JID) && m.Msg.GetReactionMessage() != nil })
		if k := r.Msg.GetReactionMessage().GetKey(); k.GetID() != eveReplyID || k.GetFromMe() || k.GetParticipant() != w.eve.PN.String() || k.GetRemoteJID() != familyChat {
			t.Errorf("Eve's phone got the owner's 🍰 on %v, want her %s in %s", k, eveReplyID, familyChat)
		}
	}) {
		return
	}

	if !t.Run("the owner writes from her phone", func(t *testing.T) {
		// Ann's own phone writes to Bob: it reaches the bridge as a
		// message from the account's owner. Her Matrix account is not the
		// bridge's to use (no double puppeting), so the bot says it in the
		// portal with her name in front.
		phoneSend(t, w.ann, w.bob.PN, text("sent from *Ann's* phone"))
		evt := w.owner.Await(t, "Ann's phone message", e2eWait, matrixMsg(bobRoom, bot, "sent from"))
		if m := evt.Content.AsMessage(); m.MsgType != event.MsgText || m.Body != "Ann: sent from *Ann's* phone" || m.FormattedBody != "<b>Ann</b>: sent from <b>Ann&#39;s</b> phone" {
			t.Errorf("Matrix shows Ann's phone message as a %s %q / %q", m.MsgType, m.Body, m.FormattedBody)
		}
		if l := w.carol.awaitLine(t, 0, e2eWait, ircLine("#bob", "sent from"), w.d); !strings.HasSuffix(l, "PRIVMSG #bob :<A\u200dnn> sent from \x02Ann's\x02 phone") {
			t.Errorf("IRC shows Ann's phone message as %q", l)
		}
		ev := w.api.await(t, "Ann's phone message", bobChat, func(ev *daemontest.WireEvent) bool { return strings.Contains(ev.Text, "sent from") })
		if ev.Sender == nil || !ev.Sender.IsOwner || ev.Sender.Name != "Ann" || ev.Sender.ID != w.ann.PN.String() || ev.HTML != "sent from <b>Ann&#39;s</b> phone" {
			t.Errorf("the API got Ann's phone message as %+v from %+v, want it from the owner", ev, ev.Sender)
		}
		// In the group too.
		phoneSend(t, w.ann, w.family.JID, text("on my way"))
		if m := w.owner.Await(t, "Ann's phone message in Family", e2eWait, matrixMsg(familyRoom, bot, "on my way")).Content.AsMessage(); m.Body != "Ann: on my way" {
			t.Errorf("Matrix shows Ann's phone message in Family as %q", m.Body)
		}
		w.carol.awaitLine(t, 0, e2eWait, ircLine("#family", "<A\u200dnn> on my way"), w.d)

		// Bob has it once, from Ann's phone: the bridge does not send it
		// back to WhatsApp. A later message shows everything before it
		// was delivered.
		w.ownerSays(t, bobRoom, &event.MessageEventContent{MsgType: event.MsgText, Body: "marker after Ann's phone"})
		w.phoneGets(t, w.bob, "the marker", func(m fakewa.Message) bool { return m.Text() == "marker after Ann's phone" })
		n := 0
		for _, m := range w.bob.Messages() {
			if strings.Contains(m.Text(), "sent from") {
				n++
				if m.From.Device != 0 {
					t.Errorf("Bob got Ann's phone message from her device %s", m.From)
				}
			}
		}
		if n != 1 {
			t.Errorf("Bob got Ann's phone message %d times, want once", n)
		}
	}) {
		return
	}

	if !t.Run("logged out from the phone, queued, linked again", func(t *testing.T) {
		devs := w.ann.Companions()
		if len(devs) != 1 {
			t.Fatalf("Ann's phone lists linked devices %v, want the daemon's alone", devs)
		}
		if err := w.ann.RemoveCompanion(devs[0]); err != nil {
			t.Fatal(err)
		}
		notice := w.api.await(t, "the logout notice", "notices", func(ev *daemontest.WireEvent) bool { return strings.Contains(ev.Text, "logged out") })
		if want := "WhatsApp link 'wa' was logged out from the phone — run `phonebridge link wa`"; notice.Text != want {
			t.Errorf("the notice says %q, want %q", notice.Text, want)
		}
		if l := w.links(t); !strings.Contains(l, "logged out") {
			t.Errorf("after the logout, phonebridge links says %q", l)
		}

		// What the owner writes meanwhile is taken (the API, on the same
		// route, has it) and waits for WhatsApp.
		queued := []string{"queued one", "queued two", "queued three"}
		for _, q := range queued {
			w.ownerSays(t, bobRoom, &event.MessageEventContent{MsgType: event.MsgText, Body: q})
		}
		w.ownerSays(t, familyRoom, &event.MessageEventContent{MsgType: event.MsgText, Body: "queued in Family"})
		// A reaction and a reply to a message from before the logout wait
		// too, and must still find it.
		if _, err := w.owner.Client.SendMessageEvent(t.Context(), bobRoom, event.EventReaction, &event.ReactionEventContent{
			RelatesTo: event.RelatesTo{Type: event.RelAnnotation, EventID: matEvent, Key: "🙌"}}); err != nil {
			t.Fatal(err)
		}
		w.ownerSays(t, bobRoom, &event.MessageEventContent{MsgType: event.MsgText, Body: "queued reply", RelatesTo: (&event.RelatesTo{}).SetReplyTo(matEvent)})
		for _, q := range queued {
			w.api.await(t, q, bobChat, func(ev *daemontest.WireEvent) bool { return ev.Text == q })
		}
		w.waitFor(t, "the five to wait for wa, tried", func() bool {
			for _, q := range w.status(t).Outbox {
				if q.Connector == "wa" && q.Chat == bobChat && q.Depth == len(queued)+2 && q.Attempts > 0 {
					return true
				}
			}
			return false
		})
		for _, m := range w.bob.Messages() {
			if strings.HasPrefix(m.Text(), "queued") {
				t.Fatalf("Bob got %q while the link was logged out", m.Text())
			}
		}

		w.link(t)
		w.waitFor(t, "wa connected", func() bool { return strings.Contains(w.links(t), " connected ") })
		if devs := w.ann.Companions(); len(devs) != 1 {
			t.Errorf("after linking again Ann's phone lists %v, want one device", devs)
		}
		w.phoneGets(t, w.eve, "the message queued in Family", func(m fakewa.Message) bool { return w.fromBridge(m, w.family.JID) && m.Text() == "queued in Family" })
		r := w.phoneGets(t, w.bob, "the queued 🙌", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.ann.PN) && m.Msg.GetReactionMessage().GetText() == "🙌"
		})
		if k := r.Msg.GetReactionMessage().GetKey(); k.GetID() != mat.ID {
			t.Errorf("the queued 🙌 reached Bob on %v, want his %s", k, mat.ID)
		}
		qr := w.phoneGets(t, w.bob, "the queued reply", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.ann.PN) && strings.Contains(m.Text(), "queued reply")
		})
		if ci := qr.Msg.GetExtendedTextMessage().GetContextInfo(); ci.GetStanzaID() != mat.ID {
			t.Errorf("the queued reply reached Bob as %q quoting %q, want a reply to his %s", qr.Text(), ci.GetStanzaID(), mat.ID)
		}
		w.ownerSays(t, bobRoom, &event.MessageEventContent{MsgType: event.MsgText, Body: "after linking again"})
		w.phoneGets(t, w.bob, "the message after linking again", func(m fakewa.Message) bool { return w.fromBridge(m, w.ann.PN) && m.Text() == "after linking again" })
		var got []string
		for _, m := range w.bob.Messages() {
			if w.fromBridge(m, w.ann.PN) && (strings.HasPrefix(m.Text(), "queued") || m.Text() == "after linking again") {
				got = append(got, m.Text())
			}
		}
		if want := append(queued, "queued reply", "after linking again"); !slices.Equal(got, want) {
			t.Errorf("after linking again Bob got %q, want %q: each once, in order", got, want)
		}

		// And the other way: Bob's phone reaches Matrix again.
		phoneSend(t, w.bob, w.ann.PN, text("welcome back"))
		w.owner.Await(t, "Bob's message after linking again", e2eWait, matrixMsg(bobRoom, bobGhost, "welcome back"))
		w.carol.awaitLine(t, 0, e2eWait, ircLine("#bob", "welcome back"), w.d)
	}) {
		return
	}

	if !t.Run("typing and read receipts", func(t *testing.T) {
		ctx := t.Context()
		// The link (linked again just before) tells WhatsApp it is
		// available once it has the account's name, or WhatsApp would
		// keep contacts' typing from it.
		devs := w.ann.Companions()
		if len(devs) != 1 {
			t.Fatalf("Ann's phone lists linked devices %v, want the daemon's alone", devs)
		}
		w.waitFor(t, "the link to say it is available", func() bool { return w.srv.PresenceOf(devs[0]) == "available" })

		// Bob types on his phone: his ghost types in his portal.
		if n, err := w.bob.SendChatState(w.ann.PN, types.ChatPresenceComposing); err != nil || n != 1 {
			t.Fatalf("Bob's typing reached %d linked devices (%v), want the daemon's", n, err)
		}
		w.owner.AwaitEphemeral(t, "Bob's ghost typing in his portal", e2eWait, func(evt *event.Event) bool {
			return evt.RoomID == bobRoom && evt.Type == event.EphemeralEventTyping && slices.Contains(evt.Content.AsTyping().UserIDs, bobGhost)
		})

		// The owner reads Bob's message on Matrix: his phone gets a read
		// receipt for it. Dendrite does not push ephemeral events to
		// appservices (MSC2409; Synapse does), so the receipt is then
		// handed to the daemon's appservice as the homeserver would.
		bobSaid := phoneSend(t, w.bob, w.ann.PN, text("did you see this?"))
		seen := w.owner.Await(t, "Bob's question", e2eWait, matrixMsg(bobRoom, bobGhost, "did you see this?")).ID
		if err := w.owner.Client.SendReceipt(ctx, bobRoom, seen, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		txn := fmt.Sprintf(`{"events":[],"ephemeral":[{"type":"m.receipt","room_id":%q,"content":{%q:{"m.read":{%q:{"ts":%d}}}}}]}`,
			bobRoom, seen, w.owner.ID, time.Now().UnixMilli())
		w.pushTransaction(t, "receipt-"+string(seen), txn)
		wctx, cancel := context.WithTimeout(ctx, e2eWait)
		defer cancel()
		r, err := w.bob.WaitReceipt(wctx, func(r fakewa.Receipt) bool { return r.Type == "read" && slices.Contains(r.IDs, bobSaid) })
		if err != nil {
			t.Fatalf("Bob's phone got no read receipt for %s: %v\n%s", bobSaid, err, w.d.Logs())
		}
		if r.From.User != w.ann.PN.User || r.From.Device == 0 {
			t.Errorf("Bob's read receipt came from %s, want Ann's linked device", r.From)
		}

		// Bob reads the owner's message on his phone: his ghost's read
		// marker moves to it in the portal.
		asked := w.ownerSays(t, bobRoom, &event.MessageEventContent{MsgType: event.MsgText, Body: "read me, Bob"})
		m := w.phoneGets(t, w.bob, "the owner's message to read", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.ann.PN) && m.Text() == "read me, Bob"
		})
		if err := w.bob.Read(m.ID); err != nil {
			t.Fatal(err)
		}
		w.owner.AwaitEphemeral(t, "Bob's ghost's read receipt on the owner's message", e2eWait, func(evt *event.Event) bool {
			if evt.RoomID != bobRoom || evt.Type != event.EphemeralEventReceipt {
				return false
			}
			_, ok := (*evt.Content.AsReceipt())[asked][event.ReceiptTypeRead][bobGhost]
			return ok
		})
	}) {
		return
	}

	// Every message a phone got from the bridge decrypted.
	for _, p := range []*fakewa.Phone{w.ann, w.bob, w.eve} {
		for _, m := range p.Messages() {
			if m.Err != nil {
				t.Errorf("%s's phone could not decrypt %s from %s: %v", p.PushName, m.ID, m.From, m.Err)
			}
		}
	}
	// The daemon stops cleanly (a race the -race build saw would fail it
	// here, with exit status 66) once its receipts are in: whatsmeow's
	// socket close races a frame being sent (fakewa.Server.Quiesce).
	w.srv.Quiesce(2 * time.Second)
	w.d.Stop(5 * time.Second)
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// TestWhatsAppEndToEndGroupAndCaptions, through the real binary like
// TestWhatsAppEndToEnd: an attachment the API sends with a caption reaches
// the phone with that caption (the sender's name in front) and its bytes,
// in Bob's chat and in Family; and in Family, what a phone edits, deletes
// and sends as media reaches the group's Matrix portal as an edit, a
// redaction by the member's ghost, and attachments with their bytes.
func TestWhatsAppEndToEndGroupAndCaptions(t *testing.T) {
	w := newE2EWorld(t)
	w.start(t)
	w.link(t)
	w.waitFor(t, "wa connected", func() bool { return strings.Contains(w.links(t), " connected ") })
	familyRoom := w.owner.AcceptInvite(t, "Family", e2eWait)
	bobChat, familyChat := w.bob.PN.String(), w.family.JID.String()
	eveGhost, bobGhost := ghost(w.eve.PN), ghost(w.bob.PN)
	dana := &daemontest.WireSender{ID: "dana", Name: "Dana"}

	if !t.Run("API attachments with captions", func(t *testing.T) {
		ctx := t.Context()
		pic := pngBytes(t)
		w.api.send(t, daemontest.WireEvent{ID: "cap-1", Kind: "message", Chat: bobChat, Sender: dana, Media: []daemontest.WireMedia{
			{MIME: "image/png", Name: "view.png", Caption: "the view", Data: base64.StdEncoding.EncodeToString(pic)},
		}})
		got := w.phoneGets(t, w.bob, "the API's captioned picture", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.ann.PN) && m.Msg.GetImageMessage() != nil
		})
		if c := got.Msg.GetImageMessage().GetCaption(); c != "*Dana*: the view" {
			t.Errorf("Bob's phone got the API's picture captioned %q, want *Dana*: the view", c)
		}
		if data, err := w.srv.DownloadMedia(ctx, got.Attachment()); err != nil || !bytes.Equal(data, pic) {
			t.Errorf("Bob's phone decrypts %d bytes (%v) of the API's picture, want the %d sent", len(data), err, len(pic))
		}

		doc := append([]byte("%PDF-1.4\n"), noisyBytes(3000)...)
		w.api.send(t, daemontest.WireEvent{ID: "cap-2", Kind: "message", Chat: familyChat, Sender: dana, Media: []daemontest.WireMedia{
			{MIME: "application/pdf", Name: "minutes.pdf", Caption: "the minutes", Data: base64.StdEncoding.EncodeToString(doc)},
		}})
		got = w.phoneGets(t, w.eve, "the API's captioned file in Family", func(m fakewa.Message) bool {
			return w.fromBridge(m, w.family.JID) && m.Msg.GetDocumentMessage() != nil
		})
		if dm := got.Msg.GetDocumentMessage(); dm.GetCaption() != "*Dana*: the minutes" || dm.GetFileName() != "minutes.pdf" || dm.GetMimetype() != "application/pdf" {
			t.Errorf("Eve's phone got the API's file as %q, %q, captioned %q", dm.GetFileName(), dm.GetMimetype(), dm.GetCaption())
		}
		if data, err := w.srv.DownloadMedia(ctx, got.Attachment()); err != nil || !bytes.Equal(data, doc) {
			t.Errorf("Eve's phone decrypts %d bytes (%v) of the API's file, want the %d sent", len(data), err, len(doc))
		}
	}) {
		return
	}

	t.Run("edits deletes and media from the phone in a group", func(t *testing.T) {
		ctx := t.Context()
		// An edit.
		sevenID := phoneSend(t, w.eve, w.family.JID, text("see you at 7"))
		seven := w.owner.Await(t, "Eve's message", e2eWait, matrixMsg(familyRoom, eveGhost, "see you at 7")).ID
		phoneSend(t, w.eve, w.family.JID, &waE2E.Message{EditedMessage: &waE2E.FutureProofMessage{Message: &waE2E.Message{
			ProtocolMessage: &waE2E.ProtocolMessage{
				Key:           &waCommon.MessageKey{RemoteJID: proto.String(familyChat), FromMe: proto.Bool(true), ID: proto.String(sevenID)},
				Type:          waE2E.ProtocolMessage_MESSAGE_EDIT.Enum(),
				EditedMessage: text("see you at 8"),
				TimestampMS:   proto.Int64(time.Now().UnixMilli()),
			}}}})
		edit := w.owner.Await(t, "Eve's edit", e2eWait, func(evt *event.Event) bool {
			m := evt.Content.AsMessage()
			return evt.RoomID == familyRoom && m.NewContent != nil && m.NewContent.Body == "see you at 8"
		})
		if rel := edit.Content.AsMessage().RelatesTo; edit.Sender != eveGhost || rel == nil || rel.Type != event.RelReplace || rel.EventID != seven {
			t.Errorf("Eve's edit reached Matrix from %s relating %+v, want her ghost replacing %s", edit.Sender, rel, seven)
		}

		// A delete for everyone.
		oopsID := phoneSend(t, w.eve, w.family.JID, text("oops, wrong chat"))
		oops := w.owner.Await(t, "Eve's slip", e2eWait, matrixMsg(familyRoom, eveGhost, "oops, wrong chat")).ID
		phoneSend(t, w.eve, w.family.JID, &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{
			Type: waE2E.ProtocolMessage_REVOKE.Enum(),
			Key:  &waCommon.MessageKey{RemoteJID: proto.String(familyChat), FromMe: proto.Bool(true), ID: proto.String(oopsID)},
		}})
		red := w.owner.Await(t, "Eve's delete", e2eWait, func(evt *event.Event) bool {
			return evt.RoomID == familyRoom && evt.Type == event.EventRedaction
		})
		if red.Redacts != oops || red.Sender != eveGhost {
			t.Errorf("Eve's delete redacted %s as %s, want %s as her ghost", red.Redacts, red.Sender, oops)
		}

		// Media: Eve's picture with a caption, Bob's file.
		pic := pngBytes(t)
		info, err := w.srv.EncryptMedia(pic, whatsmeow.MediaImage)
		if err != nil {
			t.Fatal(err)
		}
		phoneSend(t, w.eve, w.family.JID, &waE2E.Message{ImageMessage: info.Image("image/png", "at the lake")})
		doc := append([]byte("%PDF-1.4\n"), noisyBytes(2500)...)
		if info, err = w.srv.EncryptMedia(doc, whatsmeow.MediaDocument); err != nil {
			t.Fatal(err)
		}
		phoneSend(t, w.bob, w.family.JID, &waE2E.Message{DocumentMessage: info.Document("application/pdf", "plan.pdf", "")})
		for _, c := range []struct {
			who   string
			ghost id.UserID
			kind  event.MessageType
			data  []byte
			check func(*event.MessageEventContent) bool
		}{
			{"Eve's picture", eveGhost, event.MsgImage, pic, func(m *event.MessageEventContent) bool {
				return m.GetCaption() == "at the lake" && m.Info != nil && m.Info.MimeType == "image/png"
			}},
			{"Bob's file", bobGhost, event.MsgFile, doc, func(m *event.MessageEventContent) bool {
				return m.GetFileName() == "plan.pdf" && m.Info != nil && m.Info.MimeType == "application/pdf"
			}},
		} {
			m := w.owner.Await(t, c.who, e2eWait, func(evt *event.Event) bool {
				return evt.RoomID == familyRoom && evt.Sender == c.ghost && evt.Type == event.EventMessage && evt.Content.AsMessage().MsgType == c.kind
			}).Content.AsMessage()
			if !c.check(m) {
				t.Errorf("Matrix shows %s as %q (caption %q, file %q) with %+v", c.who, m.Body, m.GetCaption(), m.GetFileName(), m.Info)
			}
			uri, err := m.URL.Parse()
			if err != nil {
				t.Fatalf("%s's URL %q: %v", c.who, m.URL, err)
			}
			if got, err := w.owner.Client.DownloadBytes(ctx, uri); err != nil || !bytes.Equal(got, c.data) {
				t.Errorf("Matrix serves %d bytes (%v) for %s, want the %d sent", len(got), err, c.who, len(c.data))
			}
		}
	})

	w.srv.Quiesce(2 * time.Second) // see Quiesce: whatsmeow's close races a send
	w.d.Stop(5 * time.Second)
}
