package whatsapp

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phonebridge/phonebridge/bridge"
)

// prepareInProcess is the helper process of TestSessionStoreAcrossProcesses:
// it opens the store in dir, says "ready", and on a line from its standard
// input builds a connector there (which prepares whatsmeow's tables), then
// says "ok" or the error.
func prepareInProcess(dir string) {
	st, err := bridge.OpenStore(filepath.Join(dir, "phonebridge.db"), "normal")
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	// The connector's session pool is the store's, closed with it.
	if _, err := New(bridge.Env{Name: "me", Logger: quietLog(), StateDir: dir, Store: st}, rigOptions()); err != nil {
		fmt.Println("error:", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(1)
	}
	st.Close()
	fmt.Println("ok")
	os.Exit(0)
}

// TestSessionStoreAcrossProcesses: `phonebridge links` run while the
// daemon starts on a fresh database, both preparing whatsmeow's tables at
// once. Both must start.
func TestSessionStoreAcrossProcesses(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const rounds, procs = 4, 3
	for round := range rounds {
		dir := t.TempDir()
		type helper struct {
			cmd   *exec.Cmd
			in    io.WriteCloser
			out   *bufio.Reader
			lines []string
		}
		var hs []*helper
		for range procs {
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), "PHONEBRIDGE_TEST_PREPARE="+dir)
			cmd.Stderr = os.Stderr
			in, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			h := &helper{cmd: cmd, in: in, out: bufio.NewReader(out)}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			hs = append(hs, h)
		}
		// All open the database first, then all prepare at once.
		for _, h := range hs {
			if line := readLine(t, h.out); line != "ready" {
				t.Fatalf("round %d: helper said %q, want ready", round, line)
			}
		}
		for _, h := range hs {
			io.WriteString(h.in, "go\n")
		}
		for i, h := range hs {
			if line := readLine(t, h.out); line != "ok" {
				t.Errorf("round %d: process %d of %d preparing the session store at once: %s", round, i+1, procs, line)
			}
			h.cmd.Wait()
		}
		if t.Failed() {
			return
		}
	}
}

// TestSessionStoreConcurrently is the same with independent stores and
// connectors in this process, which are many times faster, so many more
// rounds race.
func TestSessionStoreConcurrently(t *testing.T) {
	const rounds, stores = 20, 3
	for round := range rounds {
		dir := t.TempDir()
		var opened []*bridge.Store
		for range stores {
			st, err := bridge.OpenStore(filepath.Join(dir, "phonebridge.db"), "normal")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			opened = append(opened, st)
		}
		start := make(chan struct{})
		type result struct {
			c   *Connector
			err error
		}
		results := make(chan result, stores)
		for _, st := range opened {
			go func() {
				<-start
				c, err := New(bridge.Env{Name: "me", Logger: quietLog(), StateDir: dir, Store: st}, rigOptions())
				results <- result{c, err}
			}()
		}
		close(start)
		for range stores {
			r := <-results
			if r.err != nil {
				t.Errorf("round %d: a connector preparing the session store at once with %d others failed: %v", round, stores-1, r.err)
				continue
			}
			stopWithin(t, r.c)
		}
		if t.Failed() {
			return
		}
	}
}

// TestLinksShareOneSessionPool: two links on one store keep their session
// stores on one pool (a pool per link cost each account about 500 KB,
// issue 17), and stopping one leaves the other's working.
func TestLinksShareOneSessionPool(t *testing.T) {
	dir := t.TempDir()
	st, err := bridge.OpenStore(filepath.Join(dir, "phonebridge.db"), "normal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a, err := New(bridge.Env{Name: "a", Logger: quietLog(), StateDir: dir, Store: st}, rigOptions())
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(bridge.Env{Name: "b", Logger: quietLog(), StateDir: dir, Store: st}, rigOptions())
	if err != nil {
		t.Fatal(err)
	}
	if a.db != b.db {
		t.Fatal("each link opened a session pool of its own")
	}
	stopWithin(t, a)
	if _, err := b.container.GetAllDevices(context.Background()); err != nil {
		t.Fatalf("the other link's session store after one link stopped: %v", err)
	}
	stopWithin(t, b)
}
