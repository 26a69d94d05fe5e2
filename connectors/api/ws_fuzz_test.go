package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/phonebridge/phonebridge/bridge"
)

// startFuzzConnector starts one connector for a whole fuzzing run: one
// per input would spend the run opening databases.
func startFuzzConnector(f *testing.F) *Connector {
	dir := f.TempDir()
	store, err := bridge.OpenStore(filepath.Join(dir, "bridge.db"), "normal")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { store.Close() })
	opts := NewOptions()
	opts.Listen = "127.0.0.1:0"
	opts.Token = testToken
	opts.MaxMediaBytes = 1 << 10
	c, err := New(bridge.Env{Name: "chat-api", StateDir: dir, Store: store}, opts)
	if err != nil {
		f.Fatal(err)
	}
	if err := c.Start(context.Background(), &fakeSink{store: store, noRoute: "nowhere"}); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Stop(ctx)
	})
	return c
}

// apiSeeds are events as clients send them, for bodies and frames alike.
var apiSeeds = []string{
	`{"id":"m1","kind":"message","chat":"general","sender":{"id":"a","name":"Ann"},"text":"hi","html":"<b>hi</b>"}`,
	`{"kind":"edit","chat":"c","target":"m1","text":"fixed"}`,
	`{"kind":"reaction","chat":"c","target":"m1","emoji":"👍"}`,
	`{"kind":"message","chat":"c","media":[{"mime":"image/png","name":"a.png","data":"aGVsbG8="}]}`,
	`{"kind":"message","chat":"nowhere","text":"no route"}`,
	`{"id":"pb.1","kind":"message","chat":"c","text":"x"}`,
	`{"kind":"message","chat":"c","media":[{"data":"` + strings.Repeat("QUFB", 400) + `"}]}`,
	`{"kind":"message","chat":"c","text":"x","extra":1}`, `[1]`, `null`, ``, `{"kind":`,
}

// FuzzHTTPEvents posts arbitrary bodies to /v1/events, as any client
// with the token may. The API must never panic or answer 5xx to what the
// client got wrong: it accepts with 202 and the event's id, or refuses
// with a 4xx whose JSON names the problem in one line.
func FuzzHTTPEvents(f *testing.F) {
	for _, s := range apiSeeds {
		f.Add([]byte(s))
	}
	c := startFuzzConnector(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v1/events", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		c.srv.Handler.ServeHTTP(rec, req)
		var m map[string]string
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatalf("answer %d is not a JSON object of strings: %q", rec.Code, rec.Body.String())
		}
		switch {
		case rec.Code == http.StatusAccepted:
			if m["id"] == "" {
				t.Fatalf("accepted without an id: %v", m)
			}
		case rec.Code >= 400 && rec.Code < 500:
			if m["code"] == "" || m["error"] == "" || strings.ContainsAny(m["error"], "\r\n") {
				t.Fatalf("refused with %d %v", rec.Code, m)
			}
		default:
			t.Fatalf("answered %d %v to %q", rec.Code, m, body)
		}
	})
}

// FuzzWSFrame sends arbitrary frames over one websocket, as any client
// with the token may. The connection must survive every frame under the
// size limit, each answer must be a JSON frame of a known type (an error
// with a code and a one-line reason), and a ping after the frame must
// still be answered.
func FuzzWSFrame(f *testing.F) {
	for _, s := range apiSeeds {
		f.Add([]byte(`{"type":"send","ref":"r","event":` + s + `}`))
	}
	for _, s := range []string{
		`{"type":"subscribe","ref":"s","chat":"general"}`, `{"type":"subscribe","chat":"general","since":0}`,
		`{"type":"subscribe","chat":"c","since":-1}`, `{"type":"subscribe","chat":""}`,
		`{"type":"unsubscribe","ref":"u","chat":"general"}`, `{"type":"unsubscribe"}`,
		`{"type":"ping","ref":"p"}`, `{"type":"send"}`, `{"type":"send","event":null}`,
		`{"type":"nope"}`, `{}`, `{"type":"ping","extra":1}`, `{"type":"ping"} {}`, ``, `"x"`, "\xff",
	} {
		f.Add([]byte(s))
	}
	c := startFuzzConnector(f)
	var ws *websocket.Conn
	f.Cleanup(func() {
		if ws != nil {
			ws.Close()
		}
	})
	n := 0
	f.Fuzz(func(t *testing.T, frame []byte) {
		if ws == nil {
			var err error
			ws, _, err = websocket.DefaultDialer.Dial("ws://"+c.Addr()+"/v1/ws?access_token="+url.QueryEscape(testToken), nil)
			if err != nil {
				t.Fatal(err)
			}
		}
		n++
		sync := "sync-" + strconv.Itoa(n)
		ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := ws.WriteMessage(websocket.TextMessage, frame); err != nil {
			t.Fatalf("write: %v", err)
		}
		if err := ws.WriteJSON(map[string]string{"type": "ping", "ref": sync}); err != nil {
			t.Fatalf("write: %v", err)
		}
		for {
			ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, data, err := ws.ReadMessage()
			if err != nil {
				ws = nil // the next input gets a new connection
				t.Fatalf("after frame %q: %v", frame, err)
			}
			var rf replyFrame
			if err := json.Unmarshal(data, &rf); err != nil {
				t.Fatalf("frame %q is not JSON", data)
			}
			switch rf.Type {
			case "hello", "ack", "subscribed", "unsubscribed", "event":
			case "error":
				if rf.Code == "" || rf.Error == "" || strings.ContainsAny(rf.Error, "\r\n") {
					t.Fatalf("error frame %s", data)
				}
			case "pong":
				if rf.Ref == sync {
					return
				}
			default:
				t.Fatalf("frame of type %q: %s", rf.Type, data)
			}
		}
	})
}
