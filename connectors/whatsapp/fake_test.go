package whatsapp

// The fake WhatsApp the connector's tests run against, and the fixtures
// around it. WhatsApp's servers cannot be reached from tests, so fakeWA
// plays their part behind the waClient interface: tests script what it
// answers and read back what the connector asked of it.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/proto/waHistorySync"
	"go.mau.fi/whatsmeow/proto/waWeb"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
)

// waitBound bounds every wait in these tests; reaching it is a failure.
const waitBound = 10 * time.Second

// TestMain doubles as a helper process that holds a link's lock file, so
// tests can check that two processes never drive one device, and as one
// that opens a connector on a state dir (see prepareInProcess).
func TestMain(m *testing.M) {
	if path := os.Getenv("PHONEBRIDGE_TEST_HOLD_LOCK"); path != "" {
		holdLock(path)
		return
	}
	if dir := os.Getenv("PHONEBRIDGE_TEST_PREPARE"); dir != "" {
		prepareInProcess(dir)
		return
	}
	// Keep-alives every second or two, so a server gone silent is noticed
	// in a test's time (whatsmeow: every 20-30 s, 10 s to answer). The
	// deadline leaves -race on a busy machine room to answer in time.
	whatsmeow.KeepAliveIntervalMin = time.Second
	whatsmeow.KeepAliveIntervalMax = 2 * time.Second
	whatsmeow.KeepAliveResponseDeadline = 2 * time.Second
	os.Exit(m.Run())
}

// holdLock takes the lock at path, says "locked", and keeps it until its
// standard input closes.
func holdLock(path string) {
	l, err := acquireLock(path)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
	l.release()
	os.Exit(0)
}

// fakeWA is WhatsApp as the connector sees it: it makes the connector's
// clients (see newClient), answers as scripted, and records every call.
type fakeWA struct {
	mu      sync.Mutex
	changed chan struct{} // poked on every recorded change; see waitFor
	clients []*fakeClient

	// The script.
	connectFails  int   // Connect fails this many more times, with connectErr
	connectErr    error // the network being down
	autoConnected bool  // a logged-in client's Connect dispatches *events.Connected, as WhatsApp accepting the session does
	pairCode      string
	pairErr       error
	logoutErr     error
	sendErr       error
	groups        []*types.GroupInfo
	downloads     map[string][]byte                      // attachment bytes by direct path
	pictures      map[types.JID]types.ProfilePictureInfo // profile pictures; a JID without one has none set
	pictureErrs   map[types.JID]error                    // GetProfilePictureInfo fails so for a JID
	pictureGate   chan struct{}                          // when set, GetProfilePictureInfo waits until it closes

	// What the connector did, across all clients.
	connects   int
	groupLists int               // GetJoinedGroups calls
	groupAsks  map[types.JID]int // GetGroupInfo calls
	picAsks    map[types.JID]int // GetProfilePictureInfo calls
	pairPhones []string
	logouts    int
	sent       []sentMessage
	uploads    []uploadCall
	reads      []readCall
	presences  []presenceCall
}

type sentMessage struct {
	To  types.JID
	Msg *waE2E.Message
	ID  types.MessageID
}

type uploadCall struct {
	Data []byte
	Type whatsmeow.MediaType
}

type readCall struct {
	IDs          []types.MessageID
	Chat, Sender types.JID
}

type presenceCall struct {
	Chat  types.JID
	State types.ChatPresence
	Media types.ChatPresenceMedia
}

func newFakeWA() *fakeWA {
	return &fakeWA{
		changed:       make(chan struct{}, 1),
		autoConnected: true,
		pairCode:      "KJ7Q-W2ZP",
		connectErr:    errors.New("dial tcp: lookup web.whatsapp.com: network is unreachable"),
		downloads:     map[string][]byte{},
		pictures:      map[types.JID]types.ProfilePictureInfo{},
		pictureErrs:   map[types.JID]error{},
		groupAsks:     map[types.JID]int{},
		picAsks:       map[types.JID]int{},
	}
}

// newClient is the connector's newClient: a fake client for dev.
func (wa *fakeWA) newClient(dev *store.Device) waClient {
	cl := &fakeClient{wa: wa, dev: dev, qr: make(chan whatsmeow.QRChannelItem, 8), loggedIn: dev.ID != nil}
	wa.update(func() { wa.clients = append(wa.clients, cl) })
	return cl
}

// update changes the fake under its lock and wakes waitFor.
func (wa *fakeWA) update(fn func()) {
	wa.mu.Lock()
	fn()
	wa.mu.Unlock()
	select {
	case wa.changed <- struct{}{}:
	default:
	}
}

// read runs fn under the fake's lock.
func (wa *fakeWA) read(fn func()) {
	wa.mu.Lock()
	defer wa.mu.Unlock()
	fn()
}

// waitFor waits until cond (run under the fake's lock) holds, failing the
// test with what after the bound.
func (wa *fakeWA) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(waitBound)
	for {
		wa.mu.Lock()
		ok := cond()
		wa.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-wa.changed:
		case <-deadline:
			t.Fatalf("waited %v for %s", waitBound, what)
		}
	}
}

// client waits for the connector's n-th client (1 is the first).
func (wa *fakeWA) client(t testing.TB, n int) *fakeClient {
	t.Helper()
	wa.waitFor(t, fmt.Sprintf("client #%d to be made", n), func() bool { return len(wa.clients) >= n })
	var cl *fakeClient
	wa.read(func() { cl = wa.clients[n-1] })
	return cl
}

// clientCount is how many clients were made.
func (wa *fakeWA) clientCount() (n int) {
	wa.read(func() { n = len(wa.clients) })
	return n
}

// sentMessages waits until at least n messages were sent and returns them.
func (wa *fakeWA) sentMessages(t testing.TB, n int) []sentMessage {
	t.Helper()
	wa.waitFor(t, fmt.Sprintf("%d sent WhatsApp messages", n), func() bool { return len(wa.sent) >= n })
	var out []sentMessage
	wa.read(func() { out = append(out, wa.sent...) })
	return out
}

// fakeClient is one whatsmeow client: one device's connection.
type fakeClient struct {
	wa  *fakeWA
	dev *store.Device
	// qr is what GetQRChannel returns; tests feed it with code, pair and
	// finish, as WhatsApp's pairing session would.
	qr chan whatsmeow.QRChannelItem

	// Under wa.mu.
	handlers    []whatsmeow.EventHandlerWithSuccessStatus
	connected   bool
	loggedIn    bool // the device has an id (paired), not reset by disconnecting
	qrAsked     bool
	connects    int
	disconnects int
	accepted    int // *events.Connected dispatched and handled
}

var _ waClient = (*fakeClient)(nil)

func (cl *fakeClient) AddEventHandlerWithSuccessStatus(h whatsmeow.EventHandlerWithSuccessStatus) uint32 {
	var id int
	cl.wa.update(func() {
		cl.handlers = append(cl.handlers, h)
		id = len(cl.handlers)
	})
	return uint32(id)
}

// Connect fails while the script says the network is down; a logged-in
// client is then accepted (*events.Connected) as WhatsApp would, from
// another goroutine.
func (cl *fakeClient) Connect() error {
	var err error
	accepted := false
	cl.wa.update(func() {
		cl.wa.connects++
		cl.connects++
		switch {
		case cl.connected:
			err = whatsmeow.ErrAlreadyConnected
		case cl.wa.connectFails > 0:
			cl.wa.connectFails--
			err = cl.wa.connectErr
		default:
			cl.connected = true
			accepted = cl.loggedIn && cl.wa.autoConnected
		}
	})
	if accepted {
		go func() {
			cl.deliver(&events.Connected{})
			cl.wa.update(func() { cl.accepted++ })
		}()
	}
	return err
}

func (cl *fakeClient) Disconnect() {
	cl.wa.update(func() {
		cl.connected = false
		cl.disconnects++
	})
}

func (cl *fakeClient) IsConnected() bool {
	cl.wa.mu.Lock()
	defer cl.wa.mu.Unlock()
	return cl.connected
}

func (cl *fakeClient) IsLoggedIn() bool {
	cl.wa.mu.Lock()
	defer cl.wa.mu.Unlock()
	return cl.connected && cl.loggedIn
}

// GetQRChannel refuses a paired device or a connected client, as whatsmeow
// does; it must come before Connect.
func (cl *fakeClient) GetQRChannel(ctx context.Context) (<-chan whatsmeow.QRChannelItem, error) {
	var err error
	cl.wa.update(func() {
		switch {
		case cl.connected:
			err = whatsmeow.ErrQRAlreadyConnected
		case cl.loggedIn:
			err = whatsmeow.ErrQRStoreContainsID
		default:
			cl.qrAsked = true
		}
	})
	if err != nil {
		return nil, err
	}
	return cl.qr, nil
}

func (cl *fakeClient) PairPhone(ctx context.Context, phone string, showPushNotification bool, clientType whatsmeow.PairClientType, clientDisplayName string) (string, error) {
	var code string
	var err error
	cl.wa.update(func() {
		cl.wa.pairPhones = append(cl.wa.pairPhones, phone)
		code, err = cl.wa.pairCode, cl.wa.pairErr
	})
	return code, err
}

// Logout removes the device from the account and deletes its keys, as
// whatsmeow does; it needs a connection.
func (cl *fakeClient) Logout(ctx context.Context) error {
	var err error
	cl.wa.update(func() {
		cl.wa.logouts++
		switch {
		case !cl.loggedIn:
			err = whatsmeow.ErrNotLoggedIn
		case !cl.connected:
			err = fmt.Errorf("error sending logout request: %w", whatsmeow.ErrNotConnected)
		case cl.wa.logoutErr != nil:
			err = fmt.Errorf("error sending logout request: %w", cl.wa.logoutErr)
		default:
			cl.connected, cl.loggedIn = false, false
		}
	})
	if err != nil {
		return err
	}
	return cl.dev.Delete(ctx)
}

func (cl *fakeClient) SendMessage(ctx context.Context, to types.JID, message *waE2E.Message, extra ...whatsmeow.SendRequestExtra) (whatsmeow.SendResponse, error) {
	var id types.MessageID
	if len(extra) > 0 {
		id = extra[0].ID
	}
	var err error
	cl.wa.update(func() {
		switch {
		case !cl.connected:
			err = whatsmeow.ErrNotConnected
		case cl.wa.sendErr != nil:
			err = cl.wa.sendErr
		default:
			if id == "" {
				id = fmt.Sprintf("3EB0FAKE%04d", len(cl.wa.sent))
			}
			cl.wa.sent = append(cl.wa.sent, sentMessage{To: to, Msg: message, ID: id})
		}
	})
	if err != nil {
		return whatsmeow.SendResponse{}, err
	}
	return whatsmeow.SendResponse{ID: id, Timestamp: time.Now()}, nil
}

func (cl *fakeClient) Upload(ctx context.Context, plaintext []byte, appInfo whatsmeow.MediaType) (whatsmeow.UploadResponse, error) {
	sum := sha256.Sum256(plaintext)
	cl.wa.update(func() {
		cl.wa.uploads = append(cl.wa.uploads, uploadCall{Data: append([]byte(nil), plaintext...), Type: appInfo})
	})
	return whatsmeow.UploadResponse{
		URL:           fmt.Sprintf("https://mmg.whatsapp.net/v/%x", sum[:8]),
		DirectPath:    fmt.Sprintf("/v/%x", sum[:8]),
		MediaKey:      sum[:],
		FileEncSHA256: sum[:],
		FileSHA256:    sum[:],
		FileLength:    uint64(len(plaintext)),
	}, nil
}

func (cl *fakeClient) DownloadMediaWithPath(ctx context.Context, directPath string, encFileHash, fileHash, mediaKey []byte, fileLength int, mediaType whatsmeow.MediaType, mmsType string) ([]byte, error) {
	cl.wa.mu.Lock()
	defer cl.wa.mu.Unlock()
	data, ok := cl.wa.downloads[directPath]
	if !ok {
		return nil, fmt.Errorf("download %s: %w", directPath, whatsmeow.ErrMediaDownloadFailedWith404)
	}
	return data, nil
}

func (cl *fakeClient) MarkRead(ctx context.Context, ids []types.MessageID, timestamp time.Time, chat, sender types.JID, receiptTypeExtra ...types.ReceiptType) error {
	cl.wa.update(func() { cl.wa.reads = append(cl.wa.reads, readCall{IDs: ids, Chat: chat, Sender: sender}) })
	return nil
}

func (cl *fakeClient) SendChatPresence(ctx context.Context, jid types.JID, state types.ChatPresence, media types.ChatPresenceMedia) error {
	cl.wa.update(func() { cl.wa.presences = append(cl.wa.presences, presenceCall{Chat: jid, State: state, Media: media}) })
	return nil
}

func (cl *fakeClient) GetGroupInfo(ctx context.Context, jid types.JID) (*types.GroupInfo, error) {
	var found *types.GroupInfo
	cl.wa.update(func() {
		cl.wa.groupAsks[jid]++
		for _, g := range cl.wa.groups {
			if g.JID == jid {
				found = g
			}
		}
	})
	if found == nil {
		return nil, whatsmeow.ErrGroupNotFound
	}
	return found, nil
}

// GetProfilePictureInfo answers with the scripted picture, as whatsmeow
// does: an error wrapping ErrProfilePictureNotSet when there is none.
func (cl *fakeClient) GetProfilePictureInfo(ctx context.Context, jid types.JID, params *whatsmeow.GetProfilePictureParams) (*types.ProfilePictureInfo, error) {
	var gate chan struct{}
	cl.wa.update(func() {
		cl.wa.picAsks[jid]++
		gate = cl.wa.pictureGate
	})
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	cl.wa.mu.Lock()
	defer cl.wa.mu.Unlock()
	if !cl.connected {
		return nil, whatsmeow.ErrNotConnected
	}
	if err := cl.wa.pictureErrs[jid]; err != nil {
		return nil, err
	}
	pic, ok := cl.wa.pictures[jid]
	if !ok {
		return nil, fmt.Errorf("info query returned status 404: %w", whatsmeow.ErrProfilePictureNotSet)
	}
	return &pic, nil
}

// History syncs come from fakewa's phones, not from the scripted client.
func (cl *fakeClient) DownloadHistorySync(ctx context.Context, notif *waE2E.HistorySyncNotification, synchronousStorage bool) (*waHistorySync.HistorySync, error) {
	return nil, errors.New("the scripted client has no history")
}

func (cl *fakeClient) BuildHistorySyncRequest(lastKnownMessageInfo *types.MessageInfo, count int) *waE2E.Message {
	return &waE2E.Message{}
}

func (cl *fakeClient) ParseWebMessage(chatJID types.JID, webMsg *waWeb.WebMessageInfo) (*events.Message, error) {
	return nil, errors.New("the scripted client has no history")
}

// Votes are encrypted with secrets only a real client keeps.
func (cl *fakeClient) DecryptPollVote(ctx context.Context, vote *events.Message) (*waE2E.PollVoteMessage, error) {
	return nil, whatsmeow.ErrOriginalMessageSecretNotFound
}

func (cl *fakeClient) EncryptPollVote(ctx context.Context, pollInfo *types.MessageInfo, vote *waE2E.PollVoteMessage) (*waE2E.PollUpdateMessage, error) {
	return nil, whatsmeow.ErrOriginalMessageSecretNotFound
}

func (cl *fakeClient) GetJoinedGroups(ctx context.Context) ([]*types.GroupInfo, error) {
	var out []*types.GroupInfo
	cl.wa.update(func() {
		cl.wa.groupLists++
		out = append(out, cl.wa.groups...)
	})
	return out, nil
}

// The script of a pairing session.

// code shows a new QR code that is good for timeout.
func (cl *fakeClient) code(code string, timeout time.Duration) {
	cl.qr <- whatsmeow.QRChannelItem{Event: whatsmeow.QRChannelEventCode, Code: code, Timeout: timeout}
}

// finish ends the pairing session with item (a timeout, an error).
func (cl *fakeClient) finish(item whatsmeow.QRChannelItem) {
	cl.qr <- item
	close(cl.qr)
}

// pair is the phone accepting the device, in whatsmeow's order: the
// device gets its id, name and platform and is saved, *events.PairSuccess
// goes to the handlers, and then the QR channel says success.
func (cl *fakeClient) pair(t testing.TB, phone, pushName, platform string) {
	t.Helper()
	fillDevice(cl.dev, phone, pushName, platform)
	if err := cl.dev.Save(context.Background()); err != nil {
		t.Fatalf("save the paired device: %v", err)
	}
	cl.wa.update(func() { cl.loggedIn = true })
	cl.deliver(&events.PairSuccess{ID: *cl.dev.ID, Platform: platform})
	cl.finish(whatsmeow.QRChannelSuccess)
}

// deliver dispatches evt to the handlers as whatsmeow does (in order,
// stopping at the first that fails) and reports whether all took it:
// false means WhatsApp would deliver it again.
func (cl *fakeClient) deliver(evt any) bool {
	cl.wa.mu.Lock()
	handlers := append([]whatsmeow.EventHandlerWithSuccessStatus(nil), cl.handlers...)
	cl.wa.mu.Unlock()
	for _, h := range handlers {
		if !h(evt) {
			return false
		}
	}
	return true
}

// drop is WhatsApp closing the connection on its side (after refusing
// it, say): the client is no longer connected, and did not ask for that.
func (cl *fakeClient) drop() {
	cl.wa.update(func() { cl.connected = false })
}

// removeFromPhone is the phone removing the device from its linked
// devices, as whatsmeow reports it: the session is deleted and
// *events.LoggedOut dispatched. It returns the handlers' answer.
func (cl *fakeClient) removeFromPhone(t testing.TB) bool {
	t.Helper()
	cl.wa.update(func() { cl.connected, cl.loggedIn = false, false })
	if err := cl.dev.Delete(context.Background()); err != nil {
		t.Fatalf("delete the device: %v", err)
	}
	return cl.deliver(&events.LoggedOut{Reason: events.ConnectFailureLoggedOut})
}

// waitConnected waits until the client has connected (its last Connect
// succeeded).
func (cl *fakeClient) waitConnected(t testing.TB) {
	t.Helper()
	cl.wa.waitFor(t, "the client to connect", func() bool { return cl.connected })
}

// waitAccepted waits until WhatsApp has accepted the client's session and
// the connector has handled that.
func (cl *fakeClient) waitAccepted(t testing.TB) {
	t.Helper()
	cl.wa.waitFor(t, "the session to be accepted", func() bool { return cl.accepted > 0 })
}

// fillDevice makes dev what pairing with phone makes it: device 12 of the
// account, with the account's name and the phone's platform, and a signed
// identity (whatsmeow saves none without it).
func fillDevice(dev *store.Device, phone, pushName, platform string) {
	jid := types.JID{User: strings.TrimPrefix(phone, "+"), Server: types.DefaultUserServer, Device: 12}
	dev.ID = &jid
	dev.PushName = pushName
	dev.Platform = platform
	dev.Account = &waAdv.ADVSignedDeviceIdentity{
		Details:             []byte{1},
		AccountSignatureKey: make([]byte, 32),
		AccountSignature:    make([]byte, 64),
		DeviceSignature:     make([]byte, 64),
	}
}

// recSink is the core as a connector sees it, recording every call.
// Submitted events are committed at once unless refuse says otherwise.
type recSink struct {
	bridgetest.NoDescriptions
	store *bridge.Store // for the write barrier in Submit

	mu       sync.Mutex
	changed  chan struct{}
	states   []stateCall
	notices  []string
	events   []bridge.Event
	resumes  int
	chatsChg int
	refuse   error
	refused  []bridge.Event // what was submitted while refusing
	// onState, when set before Start, sees each state as it is reported.
	onState func(stateCall)
	// described are the ids DescriptionChanged named, in order.
	described []string
}

type stateCall struct {
	State  bridge.State
	Detail string
}

func newRecSink(st *bridge.Store) *recSink {
	return &recSink{store: st, changed: make(chan struct{}, 1)}
}

func (s *recSink) update(fn func()) {
	s.mu.Lock()
	fn()
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Submit commits through the store's writer, as the core does, so what
// the connector queued before (the message it remembers) is committed
// first.
func (s *recSink) Submit(ev *bridge.Event, done func(error)) {
	s.mu.Lock()
	refuse := s.refuse
	s.mu.Unlock()
	if refuse != nil {
		s.update(func() { s.refused = append(s.refused, *ev) })
		done(refuse)
		return
	}
	err := s.store.Write(context.Background(), func(*bridge.Tx) error { return nil })
	if err == nil {
		s.update(func() { s.events = append(s.events, *ev) })
	}
	done(err)
}

func (s *recSink) Resume(chat string) { s.update(func() { s.resumes++ }) }
func (s *recSink) SetState(st bridge.State, detail string) {
	if s.onState != nil {
		s.onState(stateCall{st, detail})
	}
	s.update(func() { s.states = append(s.states, stateCall{st, detail}) })
}
func (s *recSink) Notice(text string) { s.update(func() { s.notices = append(s.notices, text) }) }
func (s *recSink) ChatsChanged()      { s.update(func() { s.chatsChg++ }) }
func (s *recSink) DescriptionChanged(id string) {
	s.update(func() { s.described = append(s.described, id) })
}

// waitFor waits until cond (run under the sink's lock) holds.
func (s *recSink) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(waitBound)
	for {
		s.mu.Lock()
		ok := cond()
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-s.changed:
		case <-deadline:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("waited %v for %s; states %+v, notices %q", waitBound, what, s.states, s.notices)
		}
	}
}

// lastState is the last state reported.
func (s *recSink) lastState() stateCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.states) == 0 {
		return stateCall{}
	}
	return s.states[len(s.states)-1]
}

func (s *recSink) noticeList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.notices...)
}

func (s *recSink) eventList() []bridge.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bridge.Event(nil), s.events...)
}

// rig is a state dir with the bridge's store, where connectors run on one
// fake WhatsApp.
type rig struct {
	t     *testing.T
	dir   string
	store *bridge.Store
	wa    *fakeWA
}

func newRig(t *testing.T) *rig {
	t.Helper()
	dir := t.TempDir()
	st, err := bridge.OpenStore(filepath.Join(dir, "phonebridge.db"), "normal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &rig{t: t, dir: dir, store: st, wa: newFakeWA()}
}

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// rigOptions are the defaults with the shortest reconnect cap allowed.
func rigOptions() *Options {
	o := NewOptions()
	o.ReconnectMax = time.Second
	return o
}

// open builds the connector called name on the rig, its clients fakes; it
// is stopped at cleanup.
func (r *rig) open(name string, opts *Options) *Connector {
	r.t.Helper()
	if opts == nil {
		opts = rigOptions()
	}
	c, err := New(bridge.Env{Name: name, Logger: quietLog(), StateDir: r.dir, Store: r.store}, opts)
	if err != nil {
		r.t.Fatalf("New(%s): %v", name, err)
	}
	c.newClient = r.wa.newClient
	r.t.Cleanup(func() { stopWithin(r.t, c) })
	return c
}

// linked builds the connector called name, linked to phone's account as
// if paired earlier (the device saved in whatsmeow's store, the link in
// the connector's table), and read back from the store as at a restart.
func (r *rig) linked(name, phone, pushName string, opts *Options) *Connector {
	r.t.Helper()
	first := r.open(name, opts)
	saveDevice(r.t, first, phone, pushName)
	stopWithin(r.t, first)
	return r.open(name, opts)
}

// saveDevice pairs a device to c's link without the pairing session.
func saveDevice(t testing.TB, c *Connector, phone, pushName string) *store.Device {
	t.Helper()
	ctx := context.Background()
	dev := c.container.NewDevice()
	fillDevice(dev, phone, pushName, "android")
	if err := dev.Save(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.saveLink(ctx, *dev.ID); err != nil {
		t.Fatal(err)
	}
	return dev
}

// start starts c with a recording sink.
func (r *rig) start(c *Connector) *recSink {
	r.t.Helper()
	s := newRecSink(r.store)
	if err := c.Start(context.Background(), s); err != nil {
		r.t.Fatalf("Start: %v", err)
	}
	return s
}

// startConnected starts a linked connector and waits until it relays.
func (r *rig) startConnected(c *Connector) (*recSink, *fakeClient) {
	r.t.Helper()
	s := r.start(c)
	cl := r.wa.client(r.t, r.wa.clientCount())
	s.waitFor(r.t, "state connected", func() bool {
		return len(s.states) > 0 && s.states[len(s.states)-1].State == bridge.StateConnected
	})
	return s, cl
}

// stopWithin stops c, failing the test if that takes past the bound.
func stopWithin(t testing.TB, c *Connector) {
	t.Helper()
	quiesceFake(c)
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Stop(ctx) }()
	select {
	case err := <-done:
		if err != nil && !strings.Contains(err.Error(), "closed") {
			t.Errorf("Stop: %v", err)
		}
	case <-time.After(waitBound + time.Second):
		t.Fatalf("Stop did not return within %v", waitBound)
	}
}

// flush waits until every write queued on st so far is committed.
func flushStore(t testing.TB, st *bridge.Store) {
	t.Helper()
	if err := st.Write(context.Background(), func(*bridge.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// linkResult is what a Link running in the background returned.
type linkResult struct {
	acct bridge.LinkAccount
	err  error
	at   time.Time // when Link returned
}

// progressLog collects a Link's progress reports.
type progressLog struct {
	mu    sync.Mutex
	items []bridge.LinkProgress
	ch    chan bridge.LinkProgress
}

func newProgressLog() *progressLog { return &progressLog{ch: make(chan bridge.LinkProgress, 64)} }

func (p *progressLog) report(lp bridge.LinkProgress) {
	p.mu.Lock()
	p.items = append(p.items, lp)
	p.mu.Unlock()
	p.ch <- lp
}

// next waits for the next progress report.
func (p *progressLog) next(t testing.TB) bridge.LinkProgress {
	t.Helper()
	select {
	case lp := <-p.ch:
		return lp
	case <-time.After(waitBound):
		t.Fatalf("no link progress within %v", waitBound)
	}
	return bridge.LinkProgress{}
}

func (p *progressLog) all() []bridge.LinkProgress {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]bridge.LinkProgress(nil), p.items...)
}

// startLink runs c.Link in the background.
func startLink(ctx context.Context, c *Connector, opts bridge.LinkOptions, p *progressLog) <-chan linkResult {
	res := make(chan linkResult, 1)
	go func() {
		acct, err := c.Link(ctx, opts, p.report)
		res <- linkResult{acct, err, time.Now()}
	}()
	return res
}

// result waits for a background Link's result.
func awaitLink(t testing.TB, res <-chan linkResult) linkResult {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(waitBound):
		t.Fatalf("Link did not return within %v", waitBound)
	}
	return linkResult{}
}

// linkReason is err's LinkError reason, failing the test if it has none.
func linkReason(t testing.TB, err error) bridge.LinkFailure {
	t.Helper()
	var le *bridge.LinkError
	if !errors.As(err, &le) {
		t.Fatalf("error %v (%T) is not a *bridge.LinkError", err, err)
	}
	return le.Reason
}

// readLine reads one line from r within the bound.
func readLine(t testing.TB, r *bufio.Reader) string {
	t.Helper()
	line := make(chan string, 1)
	go func() {
		s, _ := r.ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case s := <-line:
		return s
	case <-time.After(waitBound):
		t.Fatalf("no line within %v", waitBound)
	}
	return ""
}

// waText is an incoming WhatsApp text message.
func waText(chat, sender types.JID, id, pushName, text string) *events.Message {
	return &events.Message{
		Info: types.MessageInfo{
			MessageSource: types.MessageSource{Chat: chat, Sender: sender, IsGroup: chat.Server == types.GroupServer},
			ID:            id,
			PushName:      pushName,
			Timestamp:     time.Now(),
		},
		Message: &waE2E.Message{Conversation: &text},
	}
}

// jid parses a JID the test wrote.
func mustJID(t testing.TB, s string) types.JID {
	t.Helper()
	j, err := types.ParseJID(s)
	if err != nil {
		t.Fatalf("ParseJID(%q): %v", s, err)
	}
	return j
}

// sendRig is a running link to Ann's account on the scripted fake, for
// the sending tests that need the scripted client (see each's comment);
// the rest send on the wire (send_test.go).
type sendRig struct {
	*rig
	c    *Connector
	sink *recSink
	cl   *fakeClient
}

func newSendRig(t *testing.T, opts *Options) *sendRig {
	r := newRig(t)
	c := r.linked("me", "+15550001111", "Ann", opts)
	s, cl := r.startConnected(c)
	return &sendRig{rig: r, c: c, sink: s, cl: cl}
}

// relayedOut is a relayed event for chat from Bob on another platform.
func relayedOut(kind bridge.Kind, chat, key string) *bridge.Outgoing {
	return &bridge.Outgoing{
		Event: bridge.Event{Kind: kind, Chat: bridge.ChatRef{Connector: "me", ID: chat}, Sender: bridge.Sender{ID: "bob@api", Name: "Bob"}},
		Key:   key,
	}
}
