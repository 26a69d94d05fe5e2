// Package fakewa is a fake WhatsApp multi-device server for tests: the
// real, unmodified whatsmeow client pairs with it (by QR or pairing code),
// logs in, uploads prekeys and exchanges Signal-encrypted messages with
// scriptable phones. It checks what WhatsApp checks (the Noise handshake,
// the companion's keys and signatures, media hashes and MACs) and keeps
// WhatsApp's offline queue: a stanza the client has not acknowledged is
// sent again at its next connection.
//
// Only tests, and a daemon built with `-tags fakewa`, use it.
package fakewa

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.mau.fi/whatsmeow"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
)

// Options shape a server.
type Options struct {
	// QRRefs is how many codes one pair-device offers. WhatsApp sends 6:
	// the client shows the first for 60 s and each next one for 20 s,
	// then gives up. Fewer refs end pairing sooner (1 ref: 20 s), which
	// is how tests shorten rotation and timeout.
	QRRefs int
	// LIDAddressing sends 1:1 messages from a contact's LID with the phone
	// number as sender_pn, and group messages with addressing_mode=lid, as
	// WhatsApp does today. False sends them from the phone number with
	// sender_lid/participant_lid.
	LIDAddressing bool
	// Logf receives the server's log lines; nil discards them.
	Logf func(format string, args ...any)
}

// Server is a fake WhatsApp: one TLS listener on 127.0.0.1 that serves the
// chat websocket and the media hosts.
type Server struct {
	opts  Options
	pki   *PKI
	ln    net.Listener
	http  *http.Server
	addr  string
	clock func() time.Time

	mu          sync.Mutex
	phones      map[string]*Phone // by phone-number user
	lids        map[string]*Phone // by LID user
	companions  map[types.JID]*companion
	conns       map[*conn]struct{}
	qrRefs      map[string]*qrPairing
	codes       map[string]*codePairing // by pairing ref
	groups      map[types.JID]*Group
	media       map[string]*mediaBlob // by direct path
	uploads     []Upload
	silent      bool   // answer nothing (keep-alive lost)
	refuse      string // refuse every login: "outdated" or "banned"
	banExpire   time.Duration
	nextRegID   uint32
	redelivered int // stanzas sent again after the client saw them
	closed      bool
	wg          sync.WaitGroup
	// Received carries every node a client sent, for assertions; when
	// nobody reads, the oldest are dropped.
	Received chan *waBinary.Node

	stanzaSeq atomic.Uint64
	lastHeard atomic.Int64 // when a client last sent a node (unix ns)

	// Guarded by mu.
	mediaAuth string       // the media_conn auth token uploads need (media.go)
	pics      pictureState // profile and group pictures (pictures.go)
	versions  versionState // client versions: refused, current (version.go)

	pageFetches atomic.Int64 // WhatsApp Web's page asked for (version.go)
}

// New starts a server on a free loopback port.
func New(opts Options) (*Server, error) {
	p, err := SharedPKI()
	if err != nil {
		return nil, err
	}
	if opts.QRRefs <= 0 {
		opts.QRRefs = 6
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{
		opts: opts, pki: p, ln: ln, addr: ln.Addr().String(), clock: time.Now,
		phones: map[string]*Phone{}, lids: map[string]*Phone{},
		companions: map[types.JID]*companion{}, conns: map[*conn]struct{}{},
		qrRefs: map[string]*qrPairing{}, codes: map[string]*codePairing{},
		groups: map[types.JID]*Group{}, media: map[string]*mediaBlob{},
		nextRegID: 1000,
		Received:  make(chan *waBinary.Node, 4096),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws/chat", s.serveWS)
	mux.HandleFunc("GET "+webHost+"/{$}", s.serveWebPage)
	mux.HandleFunc("/", s.serveMedia)
	s.http = &http.Server{
		Handler:   mux,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{p.TLS}, NextProtos: []string{"http/1.1"}},
		ErrorLog:  nil,
	}
	go s.http.Serve(tls.NewListener(ln, s.http.TLSConfig))
	return s, nil
}

// Addr is the server's host:port (PHONEBRIDGE_FAKEWA_ADDR).
func (s *Server) Addr() string { return s.addr }

// PKI is the server's roots of trust.
func (s *Server) PKI() *PKI { return s.pki }

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, args...)
	}
}

// Close stops the server and drops every connection.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	err := s.http.Close()
	for _, c := range conns {
		c.close()
	}
	s.wg.Wait()
	return err
}

var rootOnce sync.Once

// Configure points a whatsmeow client at this server: the Noise root it
// trusts and HTTP clients that dial the fake for every WhatsApp host.
func (s *Server) Configure(cli *whatsmeow.Client) {
	rootOnce.Do(func() { whatsmeow.WACertPubKey = *s.pki.Root.Pub })
	hc := s.HTTPClient()
	cli.SetPreLoginHTTPClient(hc)
	cli.SetWebsocketHTTPClient(hc)
	cli.SetMediaHTTPClient(hc)
}

// HTTPClient dials this server whatever host is asked for, trusting only
// the fake's certificate authority.
func (s *Server) HTTPClient() *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, s.addr)
		},
		TLSClientConfig:     &tls.Config{RootCAs: s.pki.CAPool},
		TLSHandshakeTimeout: 5 * time.Second,
	}}
}

// Env writes the CA to dir and returns the three environment variables a
// daemon built with -tags fakewa reads to talk to this server.
func (s *Server) Env(dir string) ([]string, error) {
	path := filepath.Join(dir, "fakewa-ca.pem")
	if err := os.WriteFile(path, s.pki.CAPEM, 0o600); err != nil {
		return nil, err
	}
	return []string{
		"PHONEBRIDGE_FAKEWA_ADDR=" + s.addr,
		"PHONEBRIDGE_FAKEWA_CA=" + path,
		"PHONEBRIDGE_FAKEWA_ROOT=" + s.pki.RootHex(),
	}, nil
}

var upgrader = websocket.Upgrader{
	ReadBufferSize: 1 << 16, WriteBufferSize: 1 << 16,
	CheckOrigin: func(r *http.Request) bool { return r.Header.Get("Origin") == "https://web.whatsapp.com" },
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if r.Host != webHost {
		http.Error(w, "wrong host "+r.Host, http.StatusMisdirectedRequest)
		return
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := newConn(s, ws)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ws.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	c.run()
	s.mu.Lock()
	delete(s.conns, c)
	if c.comp != nil && c.comp.conn == c {
		c.comp.conn = nil
	}
	s.mu.Unlock()
}

// record offers n to Received without blocking.
func (s *Server) record(n *waBinary.Node) {
	for {
		select {
		case s.Received <- n:
			return
		default:
		}
		select {
		case <-s.Received: // drop the oldest
		default:
		}
	}
}

// nextID is a server stanza id, unique in the process.
func (s *Server) nextID() string {
	return fmt.Sprintf("FAKE%08d", s.stanzaSeq.Add(1))
}

// Quiesce waits, up to timeout, until every device has acknowledged what
// was sent to it and no client has sent anything for a tenth of a second:
// clients have finished their receipts and acks. Tests call it before a
// client disconnects, since whatsmeow's socket close races a frame being
// sent (a data race inside whatsmeow that -race reports).
func (s *Server) Quiesce(timeout time.Duration) {
	const quiet = 100 * time.Millisecond
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		pending := 0
		for _, comp := range s.companions {
			if comp.conn != nil && comp.conn.active {
				pending += len(comp.pending)
			}
		}
		s.mu.Unlock()
		if pending == 0 && time.Since(time.Unix(0, s.lastHeard.Load())) >= quiet {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SetSilent makes the server stop answering every client (true) as a
// network that drops packets would, without closing connections; false
// answers again.
func (s *Server) SetSilent(silent bool) {
	s.mu.Lock()
	s.silent = silent
	s.mu.Unlock()
}

func (s *Server) isSilent() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.silent
}

// RefuseOutdated makes every new connection fail with 405 (client
// outdated), whatever version it announces, until called with false
// (RequireVersion refuses only older versions).
func (s *Server) RefuseOutdated(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse = ""
	if on {
		s.refuse = "outdated"
	}
}

// Ban refuses every login with a temporary ban (402) lasting expire, until
// Unban.
func (s *Server) Ban(expire time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuse, s.banExpire = "banned", expire
}

// Unban lifts Ban.
func (s *Server) Unban() { s.RefuseOutdated(false) }

// Kick closes every connection of the account's companions (the network
// dropping); the clients reconnect by themselves.
func (s *Server) Kick(p *Phone) {
	for _, c := range s.connsOf(p) {
		c.close()
	}
}

func (s *Server) connsOf(p *Phone) []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*conn
	for _, comp := range p.companions {
		if comp.conn != nil {
			out = append(out, comp.conn)
		}
	}
	return out
}

// phoneOf finds the account behind a user JID, by phone number or LID.
func (s *Server) phoneOf(j types.JID) *Phone {
	switch j.Server {
	case types.DefaultUserServer:
		return s.phones[j.User]
	case types.HiddenUserServer:
		return s.lids[j.User]
	}
	return nil
}

// PhoneOf is phoneOf for tests.
func (s *Server) PhoneOf(j types.JID) *Phone {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.phoneOf(j)
}

// devicesOf lists an account's devices (the phone is 0), in one
// addressing form, leaving out skip.
func (s *Server) devicesOf(p *Phone, lid bool, skip types.JID) []types.JID {
	base := p.PN
	if lid {
		base = p.LID
	}
	ids := []uint16{0}
	for dev, comp := range p.companions {
		if !comp.removed {
			ids = append(ids, dev)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var out []types.JID
	for _, d := range ids {
		j := base
		j.Device = d
		if s.sameDevice(j, skip) {
			continue
		}
		out = append(out, j)
	}
	return out
}

// sameDevice compares two device JIDs whatever their addressing form.
func (s *Server) sameDevice(a, b types.JID) bool {
	if a.Device != b.Device {
		return false
	}
	pa, pb := s.phoneOf(a.ToNonAD()), s.phoneOf(b.ToNonAD())
	return pa != nil && pa == pb
}

// device resolves a device JID to its account and companion (nil for the
// phone itself, device 0).
func (s *Server) device(j types.JID) (*Phone, *companion) {
	p := s.phoneOf(types.JID{User: j.User, Server: j.Server})
	if p == nil {
		return nil, nil
	}
	if j.Device == 0 {
		return p, nil
	}
	comp := p.companions[j.Device]
	if comp == nil || comp.removed {
		return p, nil
	}
	return p, comp
}

var errNoDevice = errors.New("no such device")

func trimDevice(j types.JID) types.JID { return types.JID{User: j.User, Server: j.Server} }

func jidString(v any) string {
	switch x := v.(type) {
	case types.JID:
		return x.String()
	case string:
		return x
	}
	return fmt.Sprint(v)
}

// isServerJID reports whether an attribute names s.whatsapp.net.
func isServerJID(v any) bool {
	return strings.TrimSpace(jidString(v)) == types.ServerJID.String()
}
