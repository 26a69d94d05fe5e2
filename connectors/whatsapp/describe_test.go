package whatsapp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/phonebridge/phonebridge/bridge"
)

// aliceLIDChat is Alice as groups that hide numbers show her.
const aliceLIDChat = "204060801234567@lid"

// describeRig is a connected link whose WhatsApp has the Family group,
// with a description and a picture, and Alice, with a picture; pictures
// are served by an HTTP server, as WhatsApp's CDN does.
type describeRig struct {
	*sendRig
	clock *testClock
	cdn   *httptest.Server
}

func newDescribeRig(t *testing.T) *describeRig {
	t.Helper()
	sr := newSendRig(t, nil)
	dr := &describeRig{sendRig: sr, clock: &testClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}}
	dr.cdn = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big.jpg":
			w.Write(make([]byte, maxAvatarBytes+1))
		case "/gone.jpg":
			http.NotFound(w, r)
		default:
			// /ID.jpg serves "JPEG ID".
			fmt.Fprintf(w, "JPEG %s", strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/"), ".jpg"))
		}
	}))
	t.Cleanup(dr.cdn.Close)
	sr.c.desc.now = dr.clock.Now
	sr.c.desc.http = dr.cdn.Client()
	addressBook(t, sr.c)
	if err := sr.c.dev().LIDs.PutLIDMapping(context.Background(), mustJID(t, aliceLIDChat), mustJID(t, aliceChat)); err != nil {
		t.Fatal(err)
	}
	sr.wa.update(func() {
		sr.wa.groups = []*types.GroupInfo{family(t, "Sunday lunch at noon")}
	})
	dr.setPicture(t, familyGroup, "1001")
	dr.setPicture(t, aliceChat, "2001")
	return dr
}

func family(t *testing.T, topic string) *types.GroupInfo {
	return &types.GroupInfo{
		JID:        mustJID(t, familyGroup),
		GroupName:  types.GroupName{Name: "Family"},
		GroupTopic: types.GroupTopic{Topic: topic},
	}
}

// setPicture gives jid the picture id, served at the CDN's /id.jpg under
// a signed URL, as WhatsApp's are; "" removes jid's picture.
func (dr *describeRig) setPicture(t *testing.T, jid, id string) {
	t.Helper()
	j := mustJID(t, jid)
	dr.wa.update(func() {
		if id == "" {
			delete(dr.wa.pictures, j)
			return
		}
		dr.wa.pictures[j] = types.ProfilePictureInfo{ID: id, Type: "image", URL: dr.cdn.URL + "/" + id + ".jpg?oh=SIGNATURE&oe=68000000"}
	})
}

// changePicture gives chat the picture id ("" removes it) and has
// WhatsApp say so, under eventJID.
func (dr *describeRig) changePicture(t *testing.T, chat, eventJID, id string) {
	t.Helper()
	dr.setPicture(t, chat, id)
	dr.cl.deliver(&events.Picture{JID: mustJID(t, eventJID), PictureID: id, Remove: id == "", Timestamp: time.Now()})
}

// asks is how often WhatsApp was asked for jid's picture and group info.
func (dr *describeRig) asks(t *testing.T, jid string) (pictures, groupInfos int) {
	t.Helper()
	j := mustJID(t, jid)
	dr.wa.read(func() { pictures, groupInfos = dr.wa.picAsks[j], dr.wa.groupAsks[j] })
	return pictures, groupInfos
}

func (dr *describeRig) wantAsks(t *testing.T, jid string, pictures, groupInfos int) {
	t.Helper()
	if p, g := dr.asks(t, jid); p != pictures || g != groupInfos {
		t.Errorf("WhatsApp was asked for %s's picture %d and group info %d times, want %d and %d", jid, p, g, pictures, groupInfos)
	}
}

func (dr *describeRig) chat(t *testing.T, chat string) bridge.ChatDescription {
	t.Helper()
	d, err := dr.c.DescribeChat(context.Background(), chat)
	if err != nil {
		t.Fatalf("DescribeChat(%s): %v", chat, err)
	}
	return d
}

// wantAvatar describes chat and checks its picture: id, or none for "".
func (dr *describeRig) wantAvatar(t *testing.T, when, chat, id string) {
	t.Helper()
	var want *bridge.Media
	if id != "" {
		want = avatar(chat, id)
	}
	if got := dr.chat(t, chat); got.AvatarID != id || !reflect.DeepEqual(got.Avatar, want) {
		t.Errorf("%s: %s's avatar %q %+v, want %q", when, chat, got.AvatarID, got.Avatar, id)
	}
}

// setConnected connects or drops the client, without events.
func (dr *describeRig) setConnected(on bool) {
	dr.wa.update(func() { dr.cl.connected = on })
}

func avatar(chat, id string) *bridge.Media {
	return &bridge.Media{MIME: "image/jpeg", Name: "avatar.jpg", Ref: "avatar:" + chat + ":" + id}
}

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

// TestDescribeGroup describes a group by its subject, description and
// picture, and answers a second time from the cache.
func TestDescribeGroup(t *testing.T) {
	dr := newDescribeRig(t)
	want := bridge.ChatDescription{
		Name: "Family", Topic: "Sunday lunch at noon",
		AvatarID: "1001", Avatar: avatar(familyGroup, "1001"),
	}
	for i := range 3 {
		if got := dr.chat(t, familyGroup); !reflect.DeepEqual(got, want) {
			t.Fatalf("call %d: DescribeChat = %+v (avatar %+v), want %+v", i+1, got, got.Avatar, want)
		}
	}
	dr.wantAsks(t, familyGroup, 1, 1)

	// Within the day WhatsApp is not asked again; after it, it is.
	dr.clock.advance(describeTTL - time.Minute)
	dr.chat(t, familyGroup)
	dr.wantAsks(t, familyGroup, 1, 1)
	dr.clock.advance(2 * time.Minute)
	dr.chat(t, familyGroup)
	dr.wantAsks(t, familyGroup, 2, 2)
}

// TestDescribeGroupNameFromQuery names a group whose name was not known
// yet from the same query that tells its description.
func TestDescribeGroupNameFromQuery(t *testing.T) {
	dr := newDescribeRig(t)
	dr.c.chats.reset()
	if got := dr.chat(t, familyGroup); got.Name != "Family" {
		t.Errorf("name %q, want Family", got.Name)
	}
	dr.wantAsks(t, familyGroup, 1, 1)
}

// TestDescribePictureEvents: a picture change or removal WhatsApp
// reports makes the next call ask again. A person's may come under their
// LID while their chat is by phone number.
func TestDescribePictureEvents(t *testing.T) {
	dr := newDescribeRig(t)
	for _, tt := range []struct{ chat, eventJID, id string }{
		{familyGroup, familyGroup, "1002"},
		{aliceChat, aliceLIDChat, "2002"},
		{familyGroup, familyGroup, ""}, // removed
	} {
		dr.chat(t, tt.chat)
		before, _ := dr.asks(t, tt.chat)
		dr.changePicture(t, tt.chat, tt.eventJID, tt.id)
		dr.wantAvatar(t, "after a change reported under "+tt.eventJID, tt.chat, tt.id)
		if after, _ := dr.asks(t, tt.chat); after != before+1 {
			t.Errorf("after a change reported under %s: %d more picture queries, want 1", tt.eventJID, after-before)
		}
	}
}

// TestDescribeTopicEvents: a description change WhatsApp reports makes
// the next call ask for it again; other group changes do not.
func TestDescribeTopicEvents(t *testing.T) {
	dr := newDescribeRig(t)
	dr.chat(t, familyGroup)
	dr.cl.deliver(&events.GroupInfo{JID: mustJID(t, familyGroup), Timestamp: time.Now(), Join: []types.JID{mustJID(t, bobChat)}})
	dr.chat(t, familyGroup)
	dr.wantAsks(t, familyGroup, 1, 1)

	dr.wa.update(func() { dr.wa.groups = []*types.GroupInfo{family(t, "Lunch moved to 1pm")} })
	dr.cl.deliver(&events.GroupInfo{JID: mustJID(t, familyGroup), Timestamp: time.Now(), Topic: &types.GroupTopic{Topic: "Lunch moved to 1pm"}})
	if got := dr.chat(t, familyGroup); got.Topic != "Lunch moved to 1pm" || got.AvatarID != "1001" {
		t.Errorf("after a description change: topic %q avatar %q, want the new topic and the same picture", got.Topic, got.AvatarID)
	}
	dr.wantAsks(t, familyGroup, 1, 2)
}

// TestDescribePersonChat: a person's chat is direct, named as their
// messages are, has no description, and its picture is theirs or none;
// "none set" and "hidden from you" are both no picture, and remembered.
func TestDescribePersonChat(t *testing.T) {
	dr := newDescribeRig(t)
	dr.wa.update(func() {
		dr.wa.pictureErrs[mustJID(t, shopChat)] = fmt.Errorf("info query returned status 401: %w", whatsmeow.ErrProfilePictureUnauthorized)
	})
	tests := []struct {
		chat string
		want bridge.ChatDescription
	}{
		{aliceChat, bridge.ChatDescription{Name: "Alice Smith", Direct: true, AvatarID: "2001", Avatar: avatar(aliceChat, "2001")}},
		{bobChat, bridge.ChatDescription{Name: "Bobby", Direct: true}},        // no picture set
		{shopChat, bridge.ChatDescription{Name: "Corner Shop", Direct: true}}, // hidden by privacy
		{aliceLIDChat, bridge.ChatDescription{Name: "Alice Smith", Direct: true}},
	}
	for _, tt := range tests {
		for range 2 {
			if got := dr.chat(t, tt.chat); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DescribeChat(%s) = %+v, want %+v", tt.chat, got, tt.want)
			}
		}
		dr.wantAsks(t, tt.chat, 1, 0)
	}
}

// TestDescribeSender describes people as their messages name them, with
// their own pictures, from the same cache as their chats.
func TestDescribeSender(t *testing.T) {
	dr := newDescribeRig(t)
	dr.setPicture(t, "15550001111@s.whatsapp.net", "3001")
	dr.chat(t, aliceChat)
	tests := []struct {
		sender string
		want   bridge.SenderDescription
	}{
		{aliceChat, bridge.SenderDescription{Name: "Alice Smith", AvatarID: "2001", Avatar: avatar(aliceChat, "2001")}},
		{"15550004444:7@s.whatsapp.net", bridge.SenderDescription{Name: "Alice Smith", AvatarID: "2001", Avatar: avatar(aliceChat, "2001")}},
		{bobChat, bridge.SenderDescription{Name: "Bobby"}},
		{"15550001111@s.whatsapp.net", bridge.SenderDescription{Name: "Ann", AvatarID: "3001", Avatar: avatar("15550001111@s.whatsapp.net", "3001")}},
	}
	for _, tt := range tests {
		got, err := dr.c.DescribeSender(context.Background(), familyGroup, tt.sender)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("DescribeSender(%s) = %+v, %v; want %+v", tt.sender, got, err, tt.want)
		}
	}
	dr.wantAsks(t, aliceChat, 1, 0)
	if _, err := dr.c.DescribeSender(context.Background(), familyGroup, "nobody"); err == nil {
		t.Error("DescribeSender of a sender that is no WhatsApp user: no error")
	}
}

// TestDescribeConcurrent: callers asking at once about one person share
// one query.
func TestDescribeConcurrent(t *testing.T) {
	dr := newDescribeRig(t)
	gate := make(chan struct{})
	dr.wa.update(func() { dr.wa.pictureGate = gate })
	const callers = 16
	var started, done sync.WaitGroup
	results := make([]string, callers)
	errs := make([]error, callers)
	for i := range callers {
		started.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			started.Done()
			d, err := dr.c.DescribeSender(context.Background(), familyGroup, aliceChat)
			results[i], errs[i] = d.AvatarID, err
		}()
	}
	started.Wait()
	dr.wa.waitFor(t, "the picture query", func() bool { return dr.wa.picAsks[mustJID(t, aliceChat)] > 0 })
	close(gate)
	done.Wait()
	for i := range callers {
		if errs[i] != nil || results[i] != "2001" {
			t.Errorf("caller %d: avatar %q, %v; want 2001", i, results[i], errs[i])
		}
	}
	dr.wantAsks(t, aliceChat, 1, 0)
}

// TestDescribeOffline: while not connected the cache answers, stale or
// not; with nothing cached the error says why, and no query is made.
func TestDescribeOffline(t *testing.T) {
	dr := newDescribeRig(t)
	want := dr.chat(t, familyGroup)
	dr.setConnected(false)

	if got := dr.chat(t, familyGroup); !reflect.DeepEqual(got, want) {
		t.Errorf("offline, cached: %+v, want %+v", got, want)
	}
	dr.clock.advance(describeTTL + time.Hour)
	if got := dr.chat(t, familyGroup); !reflect.DeepEqual(got, want) {
		t.Errorf("offline, expired: %+v, want the stale %+v", got, want)
	}
	_, err := dr.c.DescribeChat(context.Background(), aliceChat)
	if err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Errorf("offline, nothing cached: %v, want an error saying the link is not connected", err)
	}
	dr.wantAsks(t, familyGroup, 1, 1)
	dr.wantAsks(t, aliceChat, 0, 0)

	// Back online, both are asked for at once: being offline is no
	// failed query to wait after.
	dr.setConnected(true)
	dr.chat(t, familyGroup)
	dr.wantAsks(t, familyGroup, 2, 2)
	dr.wantAvatar(t, "online again", aliceChat, "2001")
	dr.wantAsks(t, aliceChat, 1, 0)
}

// TestDescribeFailedQuery: a failed query is not repeated for a minute,
// whatever the callers; an expired answer stands in for a failed one.
func TestDescribeFailedQuery(t *testing.T) {
	dr := newDescribeRig(t)
	alice := mustJID(t, aliceChat)
	dr.wa.update(func() { dr.wa.pictureErrs[alice] = errors.New("info query timed out") })
	for range 3 {
		if _, err := dr.c.DescribeChat(context.Background(), aliceChat); err == nil || !strings.Contains(err.Error(), "timed out") {
			t.Errorf("failing query: %v, want its error", err)
		}
	}
	dr.wantAsks(t, aliceChat, 1, 0)

	dr.wa.update(func() { delete(dr.wa.pictureErrs, alice) })
	dr.clock.advance(describeRetry + time.Second)
	dr.wantAvatar(t, "after the retry wait", aliceChat, "2001")
	dr.wantAsks(t, aliceChat, 2, 0)

	dr.wa.update(func() { dr.wa.pictureErrs[alice] = errors.New("info query timed out") })
	dr.clock.advance(describeTTL + time.Hour)
	dr.wantAvatar(t, "expired, query failing (the stale one)", aliceChat, "2001")
	dr.wantAsks(t, aliceChat, 3, 0)
}

// TestDescribeForgottenOnLogout: a link logged out from the phone keeps
// nothing of its account's chats.
func TestDescribeForgottenOnLogout(t *testing.T) {
	dr := newDescribeRig(t)
	dr.chat(t, familyGroup)
	dr.cl.removeFromPhone(t)
	if d, err := dr.c.DescribeChat(context.Background(), familyGroup); err == nil {
		t.Errorf("after logout: %+v, want an error (nothing cached, not connected)", d)
	}
}

// TestOpenAvatar opens a described picture: with a fresh URL from
// WhatsApp, downloaded from its CDN.
func TestOpenAvatar(t *testing.T) {
	dr := newDescribeRig(t)
	ctx := context.Background()
	m := *dr.chat(t, familyGroup).Avatar
	open := func() (string, error) {
		t.Helper()
		rc, err := dr.c.OpenMedia(ctx, m)
		if err != nil {
			return "", err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		return string(b), err
	}
	if got, err := open(); err != nil || got != "JPEG 1001" {
		t.Fatalf("OpenMedia = %q, %v; want the picture's bytes", got, err)
	}
	dr.wantAsks(t, familyGroup, 2, 1) // a fresh URL: the described one may have expired

	// Changed with no event seen: the current picture is served, and the
	// next description names it without asking again.
	dr.setPicture(t, familyGroup, "1002")
	if got, err := open(); err != nil || got != "JPEG 1002" {
		t.Errorf("after an unseen change: %q, %v; want the current picture", got, err)
	}
	dr.wantAvatar(t, "described after the unseen change", familyGroup, "1002")
	dr.wantAsks(t, familyGroup, 3, 1)

	fam := mustJID(t, familyGroup)
	serve := func(path string) {
		dr.wa.update(func() {
			dr.wa.pictures[fam] = types.ProfilePictureInfo{ID: "1002", URL: dr.cdn.URL + path + "?oh=SIGNATURE"}
		})
	}
	serve("/big.jpg")
	if _, err := open(); !bridge.IsPermanent(err) {
		t.Errorf("a picture over %d bytes: %v, want a permanent error", maxAvatarBytes, err)
	}
	serve("/gone.jpg")
	if _, err := open(); err == nil || bridge.IsPermanent(err) || strings.Contains(err.Error(), "SIGNATURE") {
		t.Errorf("the CDN refusing: %v, want a temporary error without the signed URL", err)
	}
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	dr.wa.update(func() {
		dr.wa.pictures[fam] = types.ProfilePictureInfo{ID: "1002", URL: down.URL + "/1002.jpg?oh=SIGNATURE"}
	})
	if _, err := open(); err == nil || bridge.IsPermanent(err) || strings.Contains(err.Error(), "SIGNATURE") {
		t.Errorf("the CDN unreachable: %v, want a temporary error without the signed URL", err)
	}

	dr.setConnected(false)
	if _, err := open(); err == nil || bridge.IsPermanent(err) {
		t.Errorf("offline: %v, want a temporary error", err)
	}
	dr.setConnected(true)

	dr.setPicture(t, familyGroup, "")
	if _, err := open(); !bridge.IsPermanent(err) {
		t.Errorf("picture removed: %v, want a permanent error", err)
	}
	dr.wantAvatar(t, "described after the removal was seen", familyGroup, "")

	for _, ref := range []string{"avatar:", "avatar:" + familyGroup, "avatar:" + familyGroup + ":", "avatar:nobody:1"} {
		if _, err := dr.c.OpenMedia(ctx, bridge.Media{Ref: ref}); !bridge.IsPermanent(err) {
			t.Errorf("OpenMedia(%q): %v, want a permanent error", ref, err)
		}
	}
}
