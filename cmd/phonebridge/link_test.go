package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
	"github.com/phonebridge/phonebridge/internal/daemon"
	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/fakephone"
	"github.com/phonebridge/phonebridge/internal/linkui"
)

// The links these tests drive are fakephone connectors, linked a fixed
// age ago for the links table's SINCE column.
type phone = fakephone.Phone

var (
	linkedAcc   = fakephone.LinkedAccount
	linkedSince = time.Now().Add(-150 * time.Minute).UTC().Round(time.Second)
)

func newPhone(t *testing.T) *phone { return fakephone.New(t, linkedSince) }

// linkWait bounds each wait on the in-process daemon.
const linkWait = 10 * time.Second

// linkConfig writes a config with the fakephone connector "me" for p, an
// api connector "chat-api" and more connectors, in a directory short
// enough for the control socket, and returns its path.
func linkConfig(t *testing.T, p *phone, more string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pbc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "phonebridge.yaml")
	y := fmt.Sprintf(`state_dir: ./state
connectors:
  me:
    type: fakephone
    phone: %s
  chat-api:
    type: api
    listen: 127.0.0.1:0
    token: test-token-0123456789
%s`, p.Key(), more)
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runDaemonInProcess runs daemon.Run on the config at path in a goroutine
// until the test ends.
func runDaemonInProcess(t *testing.T, path string) {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	var once sync.Once
	log := slog.New(daemontest.OnReady(slog.NewTextHandler(io.Discard, nil), func() { once.Do(func() { close(ready) }) }))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- daemon.Run(ctx, cfg, log, "test") }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("the daemon stopped with %v", err)
			}
		case <-time.After(daemon.StopTimeout + time.Second):
			t.Error("the daemon did not stop")
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("the daemon returned before it was ready: %v", err)
	case <-time.After(linkWait):
		t.Fatal("the daemon was not ready in time")
	}
}

// forEachWay runs f with no daemon (the command links in-process) and
// with the daemon running in this process; running says which.
func forEachWay(t *testing.T, f func(t *testing.T, p *phone, cfg string, running bool)) {
	for _, running := range []bool{false, true} {
		name := "no daemon"
		if running {
			name = "daemon"
		}
		t.Run(name, func(t *testing.T) {
			p := newPhone(t)
			cfg := linkConfig(t, p, "")
			if running {
				runDaemonInProcess(t, cfg)
			}
			f(t, p, cfg, running)
		})
	}
}

// execute runs the CLI with args and returns what it printed.
func execute(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCommand()
	var out, stderr bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&stderr)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if stderr.Len() > 0 {
		t.Logf("stderr: %s", stderr.String())
	}
	return out.String(), err
}

// leftInLinkGo returns the goroutines still running code of link.go.
func leftInLinkGo(t *testing.T) string {
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 2); err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, g := range strings.Split(buf.String(), "\n\n") {
		if strings.Contains(g, "cmd/phonebridge/link.go") && !strings.Contains(g, "runtime/pprof.") {
			left = append(left, g)
		}
	}
	return strings.Join(left, "\n\n")
}

// tableRow matches a row of a tabwriter table with the given cells.
func tableRow(cells ...string) *regexp.Regexp {
	for i, c := range cells {
		cells[i] = regexp.QuoteMeta(c)
	}
	return regexp.MustCompile(`(?m)^` + strings.Join(cells, ` {2,}`) + `\s*$`)
}

func TestLinksCommand(t *testing.T) {
	forEachWay(t, func(t *testing.T, p *phone, cfg string, running bool) {
		out, err := execute(t, context.Background(), "links", "-c", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !tableRow("NAME", "ACCOUNT", "SHOWN AS", "STATE", "SINCE", "DETAIL").MatchString(out) {
			t.Errorf("no header:\n%s", out)
		}
		if !tableRow("me", "15551234567@s.whatsapp.net", "Ann", "connected", "2h ago").MatchString(out) {
			t.Errorf("no row for me:\n%s", out)
		}
		if strings.Contains(out, "chat-api") {
			t.Errorf("the api connector is listed as a link:\n%s", out)
		}
		if notRunning := strings.Contains(out, "phonebridge is not running"); notRunning == running {
			t.Errorf("running=%v but the output says otherwise:\n%s", running, out)
		}

		p.SetStatus(bridge.LinkStatus{State: bridge.LinkBanned, Service: "WhatsApp", Since: linkedSince, Cause: "101", Until: time.Now().Add(time.Hour)})
		out, err = execute(t, context.Background(), "links", "-c", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^me\s+-\s+-\s+temporarily banned\s+2h ago\s+temporarily banned by WhatsApp \(101\); messages wait until the ban ends until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s*$`).MatchString(out) {
			t.Errorf("a banned link without an account:\n%s", out)
		}
	})
}

func TestLinksWithNoDaemonListsARealUnlinkedWhatsAppAndSkipsAPIs(t *testing.T) {
	// Hold the api connector's port: starting it would fail.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	p := newPhone(t)
	cfg := linkConfig(t, p, fmt.Sprintf("  held-api:\n    type: api\n    listen: %s\n  phone:\n    type: whatsapp\n", held.Addr()))
	out, err := execute(t, context.Background(), "links", "-c", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !tableRow("me", "15551234567@s.whatsapp.net", "Ann", "connected", "2h ago").MatchString(out) {
		t.Errorf("no row for me:\n%s", out)
	}
	if !regexp.MustCompile("(?m)^phone\\s+-\\s+-\\s+unlinked\\s+\\d+s ago\\s+not linked: run `phonebridge link phone`\\s*$").MatchString(out) {
		t.Errorf("the whatsapp link is not listed as unlinked:\n%s", out)
	}

	apiOnly := filepath.Join(filepath.Dir(cfg), "api-only.yaml")
	if err := os.WriteFile(apiOnly, []byte("state_dir: ./state\nconnectors:\n  chat-api:\n    type: api\n    listen: 127.0.0.1:0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = execute(t, context.Background(), "links", "-c", apiOnly)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "No links: add a connector of type whatsapp to the config.") {
		t.Errorf("with no link connectors: %q", out)
	}
}

func TestUnlinkCommand(t *testing.T) {
	forEachWay(t, func(t *testing.T, p *phone, cfg string, running bool) {
		ctx := context.Background()
		out, err := execute(t, ctx, "unlink", "me", "--local", "-c", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if out != "Forgot the keys of me here. Remove the device on the phone too: Settings → Linked devices.\n" {
			t.Errorf("unlink --local printed %q", out)
		}
		_, err = execute(t, ctx, "unlink", "me", "-c", cfg)
		if err == nil || err.Error() != "not unlinked: me is not linked" {
			t.Errorf("unlinking an unlinked link: %v", err)
		}
		p.SetStatus(bridge.LinkStatus{State: bridge.LinkConnected, Since: linkedSince, Account: linkedAcc})
		out, err = execute(t, ctx, "unlink", "me", "-c", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if out != "Unlinked me: it left the phone's linked devices and its keys are deleted.\n" {
			t.Errorf("unlink printed %q", out)
		}
		if _, unlinks, _ := p.Recorded(); fmt.Sprint(unlinks) != "[true false false]" {
			t.Errorf("the connector was asked to unlink with localOnly %v", unlinks)
		}
		_, err = execute(t, ctx, "unlink", "chat-api", "-c", cfg)
		if err == nil || !strings.Contains(err.Error(), `"chat-api"`) {
			t.Errorf("unlinking an api connector: %v", err)
		}
	})
}

func TestChatsCommand(t *testing.T) {
	forEachWay(t, func(t *testing.T, p *phone, cfg string, running bool) {
		ctx := context.Background()
		out, err := execute(t, ctx, "chats", "me", "--search", "F", "-c", cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range []*regexp.Regexp{
			tableRow("NAME", "KIND", "ID"),
			tableRow("Family", "group", "120363000000000001@g.us"),
			tableRow("Football friends", "group", "120363000000000002@g.us"),
		} {
			if !row.MatchString(out) {
				t.Errorf("no %s in:\n%s", row, out)
			}
		}
		if strings.Contains(out, "Bob") {
			t.Errorf("the search did not filter:\n%s", out)
		}
		out, err = execute(t, ctx, "chats", "me", "--search", "bob", "-c", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !tableRow("Bob", "direct", "15550001111@s.whatsapp.net").MatchString(out) {
			t.Errorf("no direct chat Bob:\n%s", out)
		}
		out, err = execute(t, ctx, "chats", "me", "--search", "nobody", "-c", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(out, "No chats found.\n") {
			t.Errorf("no match printed %q", out)
		}
	})
}

const (
	cliQR1 = "2@first-code,abc,def,ghi"
	cliQR2 = "2@second-code,jkl,mno,pqr"
)

var bea = bridge.LinkAccount{ID: "15559876543@s.whatsapp.net", Handle: "+15559876543", Name: "Bea", Device: "iphone"}

func TestLinkCommandByQRCode(t *testing.T) {
	forEachWay(t, func(t *testing.T, p *phone, cfg string, running bool) {
		p.SetStatus(bridge.LinkStatus{State: bridge.LinkUnlinked, Since: linkedSince})
		p.SetLink(func(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
			progress(bridge.LinkProgress{Kind: bridge.ProgressQR, QR: cliQR1, Expires: time.Now().Add(20 * time.Second)})
			progress(bridge.LinkProgress{Kind: bridge.ProgressQR, QR: cliQR2, Expires: time.Now().Add(20 * time.Second)})
			return bea, nil
		})
		out, err := execute(t, context.Background(), "link", "me", "-c", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if left := leftInLinkGo(t); left != "" {
			t.Fatalf("goroutines of the link command outlive it:\n%s", left)
		}
		i1 := strings.Index(out, linkui.RenderQR(cliQR1, false))
		i2 := strings.Index(out, linkui.RenderQR(cliQR2, false))
		iSteps := strings.Index(out, "Settings → Linked devices → Link a device")
		if iSteps < 0 || i1 < iSteps || i2 < i1 {
			t.Fatalf("want the phone's steps, then both codes in order:\n%s", out)
		}
		relay := "Start phonebridge (`phonebridge run`) to relay it."
		if running {
			relay = "phonebridge is relaying it now."
		}
		if !strings.HasSuffix(out, "Linked me to +15559876543 (Bea) on iphone.\n"+relay+"\n") {
			t.Fatalf("the end of the output is not who was linked:\n%s", out)
		}
		if strings.Contains(out, "\x1b") {
			t.Errorf("escape sequences in output that is not a terminal:\n%q", out)
		}
		if opts, _, _ := p.Recorded(); len(opts) != 1 || opts[0] != (bridge.LinkOptions{}) {
			t.Errorf("the connector was asked to link with %+v", opts)
		}

		// --light draws the same code for a light background.
		p.SetStatus(bridge.LinkStatus{State: bridge.LinkUnlinked, Since: linkedSince})
		out, err = execute(t, context.Background(), "link", "me", "--light", "-c", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, linkui.RenderQR(cliQR1, true)) || strings.Contains(out, linkui.RenderQR(cliQR1, false)) {
			t.Errorf("--light did not draw the light code:\n%s", out)
		}
	})
}

func TestLinkCommandByPairingCode(t *testing.T) {
	forEachWay(t, func(t *testing.T, p *phone, cfg string, running bool) {
		p.SetLink(func(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
			progress(bridge.LinkProgress{Kind: bridge.ProgressPairingCode, PairingCode: "ABCDEFGH", Expires: time.Now().Add(3 * time.Minute)})
			return bea, nil
		})
		out, err := execute(t, context.Background(), "link", "me", "--phone", "+1 555 123 4567", "-c", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if left := leftInLinkGo(t); left != "" {
			t.Fatalf("goroutines of the link command outlive it:\n%s", left)
		}
		for _, want := range []string{"Link with phone number instead", "ABCD-EFGH", "Linked me to +15559876543 (Bea) on iphone."} {
			if !strings.Contains(out, want) {
				t.Errorf("no %q in:\n%s", want, out)
			}
		}
		if strings.Contains(out, "█") {
			t.Errorf("a QR code when linking by phone:\n%s", out)
		}
		if opts, _, _ := p.Recorded(); len(opts) != 1 || opts[0].Phone != "+15551234567" {
			t.Errorf("the connector was asked to link with %+v", opts)
		}

		_, err = execute(t, context.Background(), "link", "me", "--phone", "5551234567", "-c", cfg)
		if err == nil || !strings.Contains(err.Error(), "write it like +15551234567") {
			t.Errorf("a number without its country code: %v", err)
		}
	})
}

func TestLinkCommandFailures(t *testing.T) {
	forEachWay(t, func(t *testing.T, p *phone, cfg string, running bool) {
		for _, tc := range []struct {
			err  error
			want string
		}{
			{&bridge.LinkError{Reason: bridge.LinkTimedOut, Service: "WhatsApp"}, "not linked: timed out: no phone scanned the code; try again"},
			{&bridge.LinkError{Reason: bridge.LinkNoMultidevice, Service: "WhatsApp"}, "not linked: the code was scanned by a WhatsApp without linked-device support; update WhatsApp on the phone"},
			{&bridge.LinkError{Reason: bridge.LinkOutdated, Service: "WhatsApp"}, "not linked: WhatsApp refused this client as outdated; update phonebridge"},
			{&bridge.LinkError{Reason: bridge.LinkAlreadyLinked, Service: "WhatsApp", Account: &bridge.LinkAccount{Handle: "+15551234567", Name: "Ann"}}, "not linked: already linked to +15551234567 (Ann); run `phonebridge unlink me` first to link another account"},
			{errors.New("the phone\nfell in a lake"), "not linked: the phone; fell in a lake"},
		} {
			p.SetLink(func(ctx context.Context, _ bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
				progress(bridge.LinkProgress{Kind: bridge.ProgressQR, QR: cliQR1, Expires: time.Now().Add(20 * time.Second)})
				return bridge.LinkAccount{}, tc.err
			})
			out, err := execute(t, context.Background(), "link", "me", "-c", cfg)
			if err == nil || err.Error() != tc.want {
				t.Errorf("got %v, want %q", err, tc.want)
			}
			if strings.Contains(out, "Linked me") {
				t.Errorf("a failed link printed success:\n%s", out)
			}
			if left := leftInLinkGo(t); left != "" {
				t.Fatalf("goroutines of the link command outlive it:\n%s", left)
			}
		}
		_, err := execute(t, context.Background(), "link", "chat-api", "-c", cfg)
		if err == nil || !strings.Contains(err.Error(), `"chat-api"`) || !strings.Contains(err.Error(), "`phonebridge links`") {
			t.Errorf("linking an api connector: %v", err)
		}
	})
}

func TestLinkCommandCancelled(t *testing.T) {
	forEachWay(t, func(t *testing.T, p *phone, cfg string, running bool) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ended := make(chan error, 1)
		p.SetLink(func(lctx context.Context, _ bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
			progress(bridge.LinkProgress{Kind: bridge.ProgressQR, QR: cliQR1, Expires: time.Now().Add(20 * time.Second)})
			cancel() // as Ctrl-C would, once the code shows
			select {
			case <-lctx.Done():
				ended <- nil
			case <-time.After(linkWait):
				ended <- errors.New("the connector's link was not cancelled")
			}
			return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkCancelled}
		})
		_, err := execute(t, ctx, "link", "me", "-c", cfg)
		if err == nil || err.Error() != "not linked: cancelled with Ctrl-C" {
			t.Errorf("got %v", err)
		}
		select {
		case err := <-ended:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(linkWait):
			t.Error("the connector's Link did not return")
		}
		if left := leftInLinkGo(t); left != "" {
			t.Fatalf("goroutines of the link command outlive it:\n%s", left)
		}
	})
}

func TestLinkHelpSaysWhatToDoOnThePhone(t *testing.T) {
	out, err := execute(t, context.Background(), "link", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"WhatsApp → Settings → Linked devices → Link a device",
		"Link with phone number instead",
		"--phone",
		"--light",
		"phonebridge link me --phone +15551234567",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("link --help does not mention %q:\n%s", want, out)
		}
	}
}

func TestEveryStopsAndWaitsForARunningCall(t *testing.T) {
	calls := make(chan struct{}, 1)
	release := make(chan struct{})
	var finished atomic.Bool
	stop := every(time.Millisecond, func() {
		select {
		case calls <- struct{}{}:
		default:
		}
		<-release
		finished.Store(true)
	})
	select {
	case <-calls:
	case <-time.After(linkWait):
		t.Fatal("f was never called")
	}
	// stop must not return before the call in progress has.
	finishedAtStop := make(chan bool, 1)
	go func() { stop(); finishedAtStop <- finished.Load() }()
	close(release)
	select {
	case ok := <-finishedAtStop:
		if !ok {
			t.Fatal("stop returned while f was still running")
		}
	case <-time.After(linkWait):
		t.Fatal("stop did not return once f did")
	}
	select {
	case <-calls:
		t.Fatal("f was called again after stop")
	default:
	}
}
