package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// echoServer answers every byte with itself until the client closes.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		var open []net.Conn
		defer func() {
			for _, c := range open {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			open = append(open, c)
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads it back within wait.
func roundTrip(c net.Conn, msg string, wait time.Duration) (string, error) {
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(wait))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, len(msg))
	n, err := io.ReadFull(c, buf)
	return string(buf[:n]), err
}

func waitConns(t *testing.T, p *Proxy, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Conns() != want {
		if time.Now().After(deadline) {
			t.Fatalf("Conns() = %d, want %d", p.Conns(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// connected starts a proxy to an echo server and a connection through it
// that has carried a byte each way.
func connected(t *testing.T) (*Proxy, net.Conn) {
	t.Helper()
	p := Start(t, echoServer(t))
	c := dial(t, p.Addr())
	if _, err := roundTrip(c, "x", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	return p, c
}

func TestForwardsBothWays(t *testing.T) {
	p := Start(t, echoServer(t))
	c := dial(t, p.Addr())
	if got, err := roundTrip(c, "hello", 2*time.Second); got != "hello" || err != nil {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	waitConns(t, p, 1)
	c.Close()
	waitConns(t, p, 0)
}

func TestCutResetsOpenAndNewConnectionsUntilHealed(t *testing.T) {
	p, c := connected(t)
	p.Cut()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after Cut: %v, want a connection reset", err)
	}
	waitConns(t, p, 0)

	// A new connection is accepted, then reset at once: the dial itself
	// may already see the reset on loopback.
	if c2, err := net.Dial("tcp", p.Addr()); err == nil {
		c2.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = c2.Read(make([]byte, 1))
		c2.Close()
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
			t.Fatalf("read on a connection made while cut: %v, want it closed", err)
		}
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("dial while cut: %v, want a reset", err)
	}

	p.Heal()
	c3 := dial(t, p.Addr())
	if got, err := roundTrip(c3, "back", 2*time.Second); got != "back" || err != nil {
		t.Fatalf("round trip after Heal: %q, %v", got, err)
	}
}

func TestBlackHoleIsSilenceThenDeliversOnHeal(t *testing.T) {
	p, c := connected(t)
	p.BlackHole()
	got, err := roundTrip(c, "lost?", 300*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) || got != "" {
		t.Fatalf("through a black hole: %q, %v; want silence (a timeout)", got, err)
	}
	// New connections are as silent, and nothing is closed.
	c2 := dial(t, p.Addr())
	if got, err := roundTrip(c2, "new", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("new connection through a black hole: %q, %v; want silence", got, err)
	}
	waitConns(t, p, 2)

	// What was sent meanwhile arrives once healed, like TCP retransmitting.
	p.Heal()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, len("lost?"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "lost?" {
		t.Fatalf("after Heal: %q, %v", buf, err)
	}
	c2.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf = make([]byte, len("new"))
	if _, err := io.ReadFull(c2, buf); err != nil || string(buf) != "new" {
		t.Fatalf("after Heal, the new connection: %q, %v", buf, err)
	}
}

func TestSlowThrottlesThenHealRestoresSpeed(t *testing.T) {
	p := Start(t, echoServer(t))
	c := dial(t, p.Addr())
	msg := strings.Repeat("s", 1000)
	p.Slow(2000)
	start := time.Now()
	// 1000 bytes at 2000 B/s is half a second each way.
	got, err := roundTrip(c, msg, 10*time.Second)
	took := time.Since(start)
	if err != nil || got != msg {
		t.Fatalf("slow round trip: %d bytes, %v", len(got), err)
	}
	if took < 400*time.Millisecond {
		t.Errorf("1000 bytes at 2000 B/s came back in %v, want about 0.5-1 s", took)
	}

	p.Heal()
	big := bytes.Repeat([]byte("f"), 1<<20)
	start = time.Now()
	if got, err := roundTrip(c, string(big), 10*time.Second); err != nil || got != string(big) {
		t.Fatalf("healed round trip: %d bytes, %v", len(got), err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("1 MiB after Heal took %v", took)
	}
}

// TestNoGoroutineOutlivesCleanup runs a proxy with connections in every
// mode inside a subtest, then checks none of its goroutines remain.
func TestNoGoroutineOutlivesCleanup(t *testing.T) {
	target := echoServer(t)
	t.Run("proxy", func(t *testing.T) {
		p := Start(t, target)
		idle := dial(t, p.Addr())
		roundTrip(idle, "a", 2*time.Second)
		p.Slow(10)
		slow := dial(t, p.Addr())
		slow.Write([]byte(strings.Repeat("z", 100)))
		p.BlackHole()
		held := dial(t, p.Addr())
		held.Write([]byte("held"))
		waitConns(t, p, 3)
		// The client conns stay open: cleanup must end the proxy anyway.
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "faultproxy.(*Proxy)") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy goroutines outlived cleanup:\n%s", stacks)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
