package whatsapp

// Descriptions of chats and people on the wire: group subjects, topics and
// pictures, and people's pictures, as internal/fakewa serves them to the
// real whatsmeow client; the cache's own rules are unit tests below.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// newLinkedWorldWith is newLinkedWorld with setup run on the world before
// linking (pictures, contacts, topics).
func newLinkedWorldWith(t *testing.T, wopts fakewa.Options, opts *Options, setup func(w *waWorld)) *linkedWorld {
	t.Helper()
	w := newWAWorld(t, wopts)
	setup(w)
	r := newRig(t)
	c, s := r.linkedOnFake(w, "me", opts)
	c.desc.http = w.srv.HTTPClient()
	return &linkedWorld{waWorld: w, r: r, c: c, s: s}
}

// jpegOf is a small JPEG, distinct per shade.
func jpegOf(t testing.TB, shade uint8) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	for i := range img.Pix {
		img.Pix[i] = shade
	}
	img.Set(0, 0, color.RGBA{255, 0, 0, 255})
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func avatar(jid types.JID, id string) *bridge.Media {
	return &bridge.Media{MIME: "image/jpeg", Name: "avatar.jpg", Ref: "avatar:" + jid.String() + ":" + id}
}

func (lw *linkedWorld) chat(t testing.TB, chat types.JID) bridge.ChatDescription {
	t.Helper()
	d, err := lw.c.DescribeChat(ctxFor(t), chat.String())
	if err != nil {
		t.Fatalf("DescribeChat(%s): %v", chat, err)
	}
	return d
}

// watch records what the link's client dispatches from now on.
func (lw *linkedWorld) watch() *waEvents {
	cli, _ := lw.c.current()
	return watchEvents(cli)
}

// pictureChanged waits until the connector has handled WhatsApp's
// notification of jid's new picture id ("" when removed).
func pictureChanged(t testing.TB, evs *waEvents, id string) {
	t.Helper()
	evs.wait(t, "the picture change "+id, func(e any) bool {
		p, ok := e.(*events.Picture)
		return ok && p.PictureID == id && p.Remove == (id == "")
	})
}

// wantQueries checks how often WhatsApp was asked for the picture of an
// account (by phone number or LID) or group.
func (lw *linkedWorld) wantQueries(t testing.TB, jid types.JID, n int) {
	t.Helper()
	if got := lw.srv.PictureQueries(jid); got != n {
		t.Errorf("WhatsApp was asked for the picture of %s %d times, want %d", jid, got, n)
	}
}

// TestPictureLookups: destinations may describe the chat and the sender of
// every message they relay (Matrix did), yet WhatsApp is asked for a
// person's or a group's picture once, whether the chat names them by phone
// number or by LID, and again only after WhatsApp says it changed; opening
// the picture to copy it asks nothing more.
func TestPictureLookups(t *testing.T) {
	for _, lid := range []bool{false, true} {
		t.Run(map[bool]string{false: "1:1 by phone number, group by LID", true: "1:1 by LID, group by phone number"}[lid], func(t *testing.T) {
			var bobPic, famPic []byte
			lw := newLinkedWorldWith(t, fakewa.Options{LIDAddressing: lid}, nil, func(w *waWorld) {
				// The group addresses its members the other way.
				w.family.LIDAddressing = !lid
				bobPic, famPic = jpegOf(t, 10), jpegOf(t, 20)
				w.bob.SetPicture(bobPic)
				if _, err := w.family.SetPicture(famPic); err != nil {
					t.Fatal(err)
				}
			})
			ctx := ctxFor(t)
			ann, family := lw.ann.PN, lw.family.JID
			// What a destination does for each message: describe its chat
			// and its sender, and copy a picture whose id is new to it.
			copied := map[string]string{} // chat or sender id → avatar id copied
			copy := func(who, id string, m *bridge.Media, want []byte) {
				t.Helper()
				if copied[who] == id {
					return
				}
				copied[who] = id
				if m == nil {
					return
				}
				if got, err := openAll(ctx, lw.c, *m); err != nil || !bytes.Equal(got, want) {
					t.Errorf("the picture of %s: %d bytes (%v), want the %d set", who, len(got), err, len(want))
				}
			}
			relay := func(ev bridge.Event, chatPic, senderPic []byte) {
				t.Helper()
				cd, err := lw.c.DescribeChat(ctx, ev.Chat.ID)
				if err != nil {
					t.Fatalf("DescribeChat(%s): %v", ev.Chat.ID, err)
				}
				copy(ev.Chat.ID, cd.AvatarID, cd.Avatar, chatPic)
				sd, err := lw.c.DescribeSender(ctx, ev.Chat.ID, ev.Sender.ID)
				if err != nil {
					t.Fatalf("DescribeSender(%s): %v", ev.Sender.ID, err)
				}
				copy(ev.Sender.ID, sd.AvatarID, sd.Avatar, senderPic)
			}
			for i := range 5 {
				relay(lw.says(t, lw.bob, ann, fmt.Sprint("to Ann ", i)), bobPic, bobPic)
				relay(lw.says(t, lw.eve, family, fmt.Sprint("Eve in Family ", i)), famPic, nil)
				relay(lw.says(t, lw.bob, family, fmt.Sprint("Bob in Family ", i)), famPic, bobPic)
			}
			lw.wantQueries(t, lw.bob.PN, 1)
			lw.wantQueries(t, lw.eve.PN, 1) // none set: remembered too
			lw.wantQueries(t, family, 1)

			// A new picture: asked for once more, and copied.
			evs := lw.watch()
			newPic := jpegOf(t, 30)
			pictureChanged(t, evs, lw.bob.SetPicture(newPic))
			// Destinations that keep descriptions hear of it, by either JID.
			lw.s.waitFor(t, "the core to hear of Bob's new picture", func() bool {
				return slices.Contains(lw.s.described, lw.bob.PN.String()) && slices.Contains(lw.s.described, lw.bob.LID.String())
			})
			for i := range 3 {
				relay(lw.says(t, lw.bob, ann, fmt.Sprint("new picture ", i)), newPic, newPic)
				relay(lw.says(t, lw.bob, family, fmt.Sprint("new picture in Family ", i)), famPic, newPic)
			}
			lw.wantQueries(t, lw.bob.PN, 2)
			lw.wantQueries(t, family, 1)
		})
	}
}

// TestDescribe describes groups (subject, topic, picture) and people
// (name, picture) as WhatsApp has them, asking WhatsApp once and again only
// when it says something changed.
func TestDescribe(t *testing.T) {
	var alice, zed *fakewa.Phone
	var famPic, bobPic, annPic []byte
	lw := newLinkedWorldWith(t, fakewa.Options{}, nil, func(w *waWorld) {
		alice = w.srv.NewPhone("15550004444", "100000000000004", "Ali")
		zed = w.srv.NewPhone("15550009999", "100000000000009", "Zed") // shares nothing with Ann
		if err := w.ann.SetContact(context.Background(), alice.PN, "Alice Smith", "Alice"); err != nil {
			t.Fatal(err)
		}
		if err := w.ann.SetPushName(context.Background(), "Ann"); err != nil {
			t.Fatal(err)
		}
		w.family.Topic = "Sunday lunch at noon"
		famPic, bobPic, annPic = jpegOf(t, 1), jpegOf(t, 2), jpegOf(t, 3)
		w.family.SetPicture(famPic)
		w.bob.SetPicture(bobPic)
		w.ann.SetPicture(annPic)
	})
	ann, family := lw.ann.PN, lw.family.JID
	famID, _ := lw.srv.Picture(family)
	bobID, _ := lw.srv.Picture(lw.bob.PN)
	annID, _ := lw.srv.Picture(ann)
	lw.says(t, lw.bob, ann, "hi, I am Bob") // his name comes with his messages
	waitUntil(t, "the account's name", func() bool { return lw.c.LinkStatus().Account.Name == "Ann" })
	waitUntil(t, "Alice in the contacts", func() bool {
		// Through the connector's list: whatsmeow's GetContact copies its
		// cached entry after letting go of the lock the sync writes under.
		chats, err := lw.c.Chats(context.Background(), "Alice Smith")
		return err == nil && len(chats) == 1 && chats[0].ID == alice.PN.String()
	})

	t.Run("group", func(t *testing.T) {
		want := bridge.ChatDescription{Name: "Family", Topic: "Sunday lunch at noon", AvatarID: famID, Avatar: avatar(family, famID)}
		for i := range 3 {
			if got := lw.chat(t, family); !reflect.DeepEqual(got, want) {
				t.Fatalf("call %d: DescribeChat = %+v (avatar %+v), want %+v", i+1, got, got.Avatar, want)
			}
		}
		lw.wantQueries(t, family, 1)
		if got, err := openAll(ctxFor(t), lw.c, *want.Avatar); err != nil || !bytes.Equal(got, famPic) {
			t.Errorf("the group's picture: %d bytes (%v), want the %d set", len(got), err, len(famPic))
		}
		lw.wantQueries(t, family, 1)
	})

	t.Run("group name from the query", func(t *testing.T) {
		lw.c.chats.reset()
		lw.c.desc.forget(descKey{descTopic, family})
		if got := lw.chat(t, family); got.Name != "Family" {
			t.Errorf("name %q, want Family", got.Name)
		}
	})

	t.Run("topic change", func(t *testing.T) {
		evs := lw.watch()
		lw.family.SetTopic(lw.srv, lw.eve, "Lunch moved to 1pm")
		evs.wait(t, "the topic change", func(e any) bool { g, ok := e.(*events.GroupInfo); return ok && g.Topic != nil })
		lw.s.waitFor(t, "the core to hear of it", func() bool { return slices.Contains(lw.s.described, family.String()) })
		if got := lw.chat(t, family); got.Topic != "Lunch moved to 1pm" || got.AvatarID != famID {
			t.Errorf("after a topic change: topic %q picture %q, want the new topic and the same picture", got.Topic, got.AvatarID)
		}
		lw.wantQueries(t, family, 1)
	})

	t.Run("subject change", func(t *testing.T) {
		lw.s.update(func() { lw.s.described = nil })
		evs := lw.watch()
		lw.family.SetSubject(lw.srv, lw.eve, "Family & friends")
		evs.wait(t, "the subject change", func(e any) bool { g, ok := e.(*events.GroupInfo); return ok && g.Name != nil })
		// Portals named after the group hear of it at once.
		lw.s.waitFor(t, "the core to hear of it", func() bool { return slices.Contains(lw.s.described, family.String()) })
		if got := lw.chat(t, family); got.Name != "Family & friends" {
			t.Errorf("after a subject change the name is %q", got.Name)
		}
	})

	t.Run("person chat", func(t *testing.T) {
		lw.eve.SetPicture(jpegOf(t, 9))
		lw.eve.HidePicture(true) // privacy: nobody
		for _, tc := range []struct {
			chat types.JID
			name string // "" when not checked
			pic  string
		}{
			{lw.bob.PN, "Bob", bobID},
			{lw.bob.LID, "Bob", bobID},    // the same person: asked once
			{alice.PN, "Alice Smith", ""}, // no picture set
			{lw.eve.PN, "", ""},           // hidden from Ann
		} {
			var want *bridge.Media
			if tc.pic != "" {
				want = avatar(lw.bob.PN, tc.pic) // named by phone number
			}
			for range 2 {
				got := lw.chat(t, tc.chat)
				if !got.Direct || got.Topic != "" || got.AvatarID != tc.pic || !reflect.DeepEqual(got.Avatar, want) || (tc.name != "" && got.Name != tc.name) {
					t.Errorf("DescribeChat(%s) = %+v, want a direct chat named %q with picture %q", tc.chat, got, tc.name, tc.pic)
				}
			}
		}
		lw.wantQueries(t, lw.bob.PN, 1)
		lw.wantQueries(t, alice.PN, 1)
		lw.wantQueries(t, lw.eve.PN, 1)
	})

	t.Run("sender", func(t *testing.T) {
		for _, tc := range []struct {
			sender string
			want   bridge.SenderDescription
		}{
			{lw.bob.PN.String(), bridge.SenderDescription{Name: "Bob", AvatarID: bobID, Avatar: avatar(lw.bob.PN, bobID)}},
			{"15550002222:7@s.whatsapp.net", bridge.SenderDescription{Name: "Bob", AvatarID: bobID, Avatar: avatar(lw.bob.PN, bobID)}},
			{alice.PN.String(), bridge.SenderDescription{Name: "Alice Smith"}},
			{ann.String(), bridge.SenderDescription{Name: "Ann", AvatarID: annID, Avatar: avatar(ann, annID)}},
		} {
			got, err := lw.c.DescribeSender(ctxFor(t), family.String(), tc.sender)
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("DescribeSender(%s) = %+v, %v; want %+v", tc.sender, got, err, tc.want)
			}
		}
		lw.wantQueries(t, lw.bob.PN, 1) // the person chat's query served these too
		if _, err := lw.c.DescribeSender(ctxFor(t), family.String(), "nobody"); err == nil {
			t.Error("DescribeSender of a sender that is no WhatsApp user: no error")
		}
	})

	t.Run("picture changes", func(t *testing.T) {
		lw.chat(t, lw.bob.PN)
		before := lw.srv.PictureQueries(lw.bob.PN)
		for _, pic := range [][]byte{jpegOf(t, 40), nil} {
			evs := lw.watch()
			id := lw.bob.SetPicture(pic)
			pictureChanged(t, evs, id)
			var want *bridge.Media
			if id != "" {
				want = avatar(lw.bob.PN, id)
			}
			if got := lw.chat(t, lw.bob.PN); got.AvatarID != id || !reflect.DeepEqual(got.Avatar, want) {
				t.Errorf("after a change to %q: %+v", id, got)
			}
			before++
			lw.wantQueries(t, lw.bob.PN, before)
		}
	})

	// A picture changed without a notification reaching the link (Zed
	// shares no chat with Ann): opening the described one serves the
	// current one, and the next description names it.
	t.Run("unseen change", func(t *testing.T) {
		first := jpegOf(t, 50)
		zed.SetPicture(first)
		d := lw.chat(t, zed.PN)
		if d.Avatar == nil {
			t.Fatalf("Zed described as %+v, want his picture", d)
		}
		second := jpegOf(t, 60)
		secondID := zed.SetPicture(second)
		if got, err := openAll(ctxFor(t), lw.c, *d.Avatar); err != nil || !bytes.Equal(got, second) {
			t.Errorf("after an unseen change: %d bytes (%v), want the current picture", len(got), err)
		}
		queries := lw.srv.PictureQueries(zed.PN)
		if got := lw.chat(t, zed.PN); got.AvatarID != secondID {
			t.Errorf("described after the unseen change as %q, want %q", got.AvatarID, secondID)
		}
		lw.wantQueries(t, zed.PN, queries)

		zed.SetPicture(nil)
		if _, err := openAll(ctxFor(t), lw.c, *lw.chat(t, zed.PN).Avatar); !bridge.IsPermanent(err) {
			t.Errorf("a picture removed since: %v, want a permanent error", err)
		}
		if got := lw.chat(t, zed.PN); got.AvatarID != "" || got.Avatar != nil {
			t.Errorf("described after the removal was seen as %+v, want no picture", got)
		}

		zed.SetPicture(bytes.Repeat([]byte{0xff}, maxAvatarBytes+1))
		lw.c.desc.forget(descKey{descPicture, zed.PN})
		if _, err := openAll(ctxFor(t), lw.c, *lw.chat(t, zed.PN).Avatar); !bridge.IsPermanent(err) {
			t.Errorf("a picture over %d bytes: %v, want a permanent error", maxAvatarBytes, err)
		}
	})

	t.Run("damaged references", func(t *testing.T) {
		for _, ref := range []string{"avatar:", "avatar:" + family.String(), "avatar:" + family.String() + ":", "avatar:nobody:1"} {
			if _, err := lw.c.OpenMedia(ctxFor(t), bridge.Media{Ref: ref}); !bridge.IsPermanent(err) {
				t.Errorf("OpenMedia(%q): %v, want a permanent error", ref, err)
			}
		}
	})

	// While WhatsApp cannot be reached the cache answers; with nothing
	// cached the error says why, and nothing is asked. Back online, what
	// was not known is asked for at once.
	t.Run("offline", func(t *testing.T) {
		want := lw.chat(t, family)
		lw.net.Down()
		lw.srv.Kick(lw.ann)
		lw.s.waitFor(t, "the link to notice", lw.s.stateIsNot(bridge.StateConnected))
		if got := lw.chat(t, family); !reflect.DeepEqual(got, want) {
			t.Errorf("offline, cached: %+v, want %+v", got, want)
		}
		_, err := lw.c.DescribeChat(ctxFor(t), zed.LID.String())
		if err == nil || !strings.Contains(err.Error(), "not connected") {
			t.Errorf("offline, nothing cached: %v, want an error saying the link is not connected", err)
		}
		queries := lw.srv.PictureQueries(zed.PN)
		lw.net.Up()
		lw.s.waitFor(t, "the link to be back", lw.s.stateIs(bridge.StateConnected))
		lw.chat(t, zed.LID)
		lw.wantQueries(t, zed.PN, queries+1)
	})

	// Last: a link logged out from the phone keeps nothing of its
	// account's chats.
	t.Run("forgotten on logout", func(t *testing.T) {
		lw.chat(t, family)
		if err := lw.ann.RemoveCompanion(companionOf(t, lw.ann)); err != nil {
			t.Fatal(err)
		}
		lw.s.waitFor(t, "the logout", lw.s.stateIs(bridge.StateFailed))
		if d, err := lw.c.DescribeChat(ctxFor(t), family.String()); err == nil {
			t.Errorf("after logout: %+v, want an error (nothing cached, not connected)", d)
		}
	})
}

// The cache's rules, which need no WhatsApp: how long answers and
// failures hold, and that concurrent callers share one query.

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// countingFetch answers with val or err and counts its calls.
type countingFetch struct {
	mu    sync.Mutex
	calls int
	val   descValue
	err   error
	gate  chan struct{} // when set, calls wait until it closes
}

func (f *countingFetch) fetch(ctx context.Context) (descValue, error) {
	f.mu.Lock()
	f.calls++
	gate, v, err := f.gate, f.val, f.err
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return v, err
}

func (f *countingFetch) set(v descValue, err error) {
	f.mu.Lock()
	f.val, f.err = v, err
	f.mu.Unlock()
}

func (f *countingFetch) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// TestDescribeCacheTTL: an answer, "none" included, holds for a day.
func TestDescribeCacheTTL(t *testing.T) {
	clock := &testClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	d := &describeCache{now: clock.Now}
	f := &countingFetch{val: descValue{val: ""}}
	key := descKey{descPicture, types.NewJID("15550002222", types.DefaultUserServer)}
	get := func() {
		t.Helper()
		if _, err := d.get(context.Background(), context.Background(), key, f.fetch); err != nil {
			t.Fatal(err)
		}
	}
	get()
	get()
	clock.advance(describeTTL - time.Minute)
	get()
	if f.count() != 1 {
		t.Errorf("%d queries within the day, want 1", f.count())
	}
	clock.advance(2 * time.Minute)
	get()
	if f.count() != 2 {
		t.Errorf("%d queries after the day, want 2", f.count())
	}
}

// TestDescribeCacheFailure: a failed query is not repeated for a minute,
// whatever the callers; an expired answer stands in for a failed one.
func TestDescribeCacheFailure(t *testing.T) {
	clock := &testClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	d := &describeCache{now: clock.Now}
	f := &countingFetch{err: errors.New("info query timed out")}
	key := descKey{descPicture, types.NewJID("15550002222", types.DefaultUserServer)}
	get := func() (string, error) {
		v, err := d.get(context.Background(), context.Background(), key, f.fetch)
		return v.val, err
	}
	for range 3 {
		if _, err := get(); err == nil || !strings.Contains(err.Error(), "timed out") {
			t.Errorf("failing query: %v, want its error", err)
		}
	}
	if f.count() != 1 {
		t.Errorf("%d queries while failing, want 1", f.count())
	}
	f.set(descValue{val: "2001"}, nil)
	clock.advance(describeRetry + time.Second)
	if v, err := get(); v != "2001" || err != nil || f.count() != 2 {
		t.Errorf("after the retry wait: %q, %v after %d queries; want 2001 after 2", v, err, f.count())
	}
	f.set(descValue{}, errors.New("info query timed out"))
	clock.advance(describeTTL + time.Hour)
	if v, err := get(); v != "2001" || err != nil || f.count() != 3 {
		t.Errorf("expired, query failing: %q, %v after %d queries; want the stale 2001 after 3", v, err, f.count())
	}
	// Not connected is no failed query: asked again at once.
	f.set(descValue{}, errOffline)
	d.forget(key)
	get()
	f.set(descValue{val: "2002"}, nil)
	if v, _ := get(); v != "2002" {
		t.Errorf("after being offline: %q, want a new query's answer", v)
	}
}

// TestDescribeCacheConcurrent: callers asking at once share one query.
func TestDescribeCacheConcurrent(t *testing.T) {
	d := &describeCache{}
	f := &countingFetch{val: descValue{val: "2001"}, gate: make(chan struct{})}
	key := descKey{descPicture, types.NewJID("15550002222", types.DefaultUserServer)}
	const callers = 16
	var done sync.WaitGroup
	results := make([]descValue, callers)
	errs := make([]error, callers)
	for i := range callers {
		done.Add(1)
		go func() {
			defer done.Done()
			results[i], errs[i] = d.get(context.Background(), context.Background(), key, f.fetch)
		}()
	}
	waitUntil(t, "the query", func() bool { return f.count() > 0 })
	close(f.gate)
	done.Wait()
	for i := range callers {
		if errs[i] != nil || results[i].val != "2001" {
			t.Errorf("caller %d: %q, %v; want 2001", i, results[i], errs[i])
		}
	}
	if f.count() != 1 {
		t.Errorf("%d queries for %d callers at once, want 1", f.count(), callers)
	}
}

// TestOfflineErrors: a query that failed for want of a connection (none,
// or it went away under the query, even after whatsmeow sent it again)
// is no failed query to wait out: the cache asks again at once.
func TestOfflineErrors(t *testing.T) {
	c := &Connector{name: "me"}
	for _, err := range []error{
		whatsmeow.ErrNotConnected,
		fmt.Errorf("query: %w", whatsmeow.ErrIQDisconnected),
		&whatsmeow.DisconnectedError{Action: "info query (retry)"},
	} {
		if got := c.offline(err); !errors.Is(got, errOffline) {
			t.Errorf("offline(%v) = %v, want errOffline", err, got)
		}
	}
	for _, err := range []error{whatsmeow.ErrIQTimedOut, whatsmeow.ErrIQRateOverLimit} {
		if got := c.offline(err); errors.Is(got, errOffline) {
			t.Errorf("offline(%v) = %v, want it a failure", err, got)
		}
	}
}
