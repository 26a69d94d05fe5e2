package fakewa

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types/events"
	waLog "go.mau.fi/whatsmeow/util/log"
	_ "modernc.org/sqlite"
)

const waitBound = 20 * time.Second

// testLog is whatsmeow's logger in a test: it stops at the test's end,
// since whatsmeow logs from goroutines that outlive it.
type testLog struct {
	t      testing.TB
	mu     *sync.Mutex
	done   *bool
	module string
}

func newTestLog(t testing.TB) waLog.Logger {
	l := testLog{t: t, mu: &sync.Mutex{}, done: new(bool)}
	t.Cleanup(func() { l.mu.Lock(); *l.done = true; l.mu.Unlock() })
	return l
}

func (l testLog) log(level, msg string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !*l.done {
		l.t.Logf("%s [%s] %s", level, l.module, fmt.Sprintf(msg, args...))
	}
}
func (l testLog) Warnf(m string, a ...any)  { l.log("WARN", m, a...) }
func (l testLog) Errorf(m string, a ...any) { l.log("ERROR", m, a...) }
func (l testLog) Infof(m string, a ...any)  { l.log("INFO", m, a...) }
func (l testLog) Debugf(string, ...any)     {}
func (l testLog) Sub(m string) waLog.Logger { l.module = l.module + "/" + m; return l }

func newServer(t testing.TB, opts Options) *Server {
	t.Helper()
	logf := newTestLog(t)
	opts.Logf = func(f string, a ...any) { logf.Infof(f, a...) }
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// client is a real whatsmeow client with its own store, pointed at srv.
type client struct {
	*whatsmeow.Client
	container *sqlstore.Container
	events    *mailbox[any]
}

func newContainer(t testing.TB) *sqlstore.Container {
	t.Helper()
	path := filepath.Join(t.TempDir(), "wa.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)&_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c := sqlstore.NewWithDB(db, "sqlite3", newTestLog(t))
	if err := c.Upgrade(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

func newClient(t testing.TB, srv *Server, c *sqlstore.Container, dev *store.Device) *client {
	t.Helper()
	if c == nil {
		c = newContainer(t)
	}
	if dev == nil {
		dev = c.NewDevice()
	}
	cli := whatsmeow.NewClient(dev, newTestLog(t))
	srv.Configure(cli)
	cl := &client{Client: cli, container: c, events: newMailbox[any]()}
	cli.AddEventHandler(func(evt any) { cl.events.push(evt) })
	t.Cleanup(func() {
		srv.Quiesce(2 * time.Second)
		cli.Disconnect()
	})
	return cl
}

func waitEvent[T any](t testing.TB, cl *client, ok func(T) bool) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	evt, err := cl.events.waitFor(ctx, func(e any) bool {
		v, is := e.(T)
		return is && (ok == nil || ok(v))
	})
	if err != nil {
		var zero T
		t.Fatalf("no %T event within %v", zero, waitBound)
	}
	return evt.(T)
}

// link pairs a new client with p by QR and waits until it is connected;
// setup configures the client before it connects.
func link(t testing.TB, srv *Server, p *Phone, setup ...func(*client)) *client {
	t.Helper()
	cl := newClient(t, srv, nil, nil)
	for _, f := range setup {
		f(cl)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	defer cancel()
	qr, err := cl.GetQRChannel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Connect(); err != nil {
		t.Fatal(err)
	}
	item := <-qr
	if item.Event != whatsmeow.QRChannelEventCode {
		t.Fatalf("first QR item is %q", item.Event)
	}
	if _, err := p.ScanQR(ctx, item.Code); err != nil {
		t.Fatal(err)
	}
	if item := <-qr; item.Event != whatsmeow.QRChannelSuccess.Event {
		t.Fatalf("after the scan the QR channel says %q (%v)", item.Event, item.Error)
	}
	waitEvent[*events.Connected](t, cl, nil)
	return cl
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitBound)
	t.Cleanup(cancel)
	return ctx
}
