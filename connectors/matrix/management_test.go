package matrix

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/fakephone"
	"github.com/phonebridge/phonebridge/internal/qrscan"
)

// withPhone adds a fakephone connector "phone" to the rig's config.
func (r *asRig) withPhone(t *testing.T) *fakephone.Phone {
	t.Helper()
	p := fakephone.New(t, time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC))
	cfg, err := os.ReadFile(r.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	withPhone := strings.Replace(string(cfg), "connectors:\n", fmt.Sprintf("connectors:\n  phone:\n    type: fakephone\n    phone: %s\n", p.Key()), 1)
	if err := os.WriteFile(r.cfgPath, []byte(withPhone), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// withRoutedPhone adds the fakephone connector "phone", as withPhone,
// and a route of all its chats to mx.
func (r *asRig) withRoutedPhone(t *testing.T) *fakephone.Phone {
	t.Helper()
	p := r.withPhone(t)
	cfg, err := os.ReadFile(r.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	routed := string(cfg) + "  - name: phone\n    endpoints:\n      - {connector: phone, chats: all}\n      - {connector: mx, chats: all}\n"
	if err := os.WriteFile(r.cfgPath, []byte(routed), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// notice waits for the bot's next notice in room and returns its body.
func (h *human) notice(t *testing.T, room id.RoomID, bot id.UserID, what string) string {
	t.Helper()
	evt := h.next(t, what, func(evt *event.Event) bool {
		return evt.RoomID == room && evt.Sender == bot && evt.Type == event.EventMessage && evt.Content.AsMessage().MsgType == event.MsgNotice
	})
	return evt.Content.AsMessage().Body
}

// command sends line to room as h and returns the bot's answer.
func (h *human) command(t *testing.T, room id.RoomID, bot id.UserID, line string) string {
	t.Helper()
	if _, err := h.cli.SendText(t.Context(), room, line); err != nil {
		t.Fatal(err)
	}
	return h.notice(t, room, bot, "the answer to "+line)
}

// TestManagementRoomOnDendrite: the owner invites the bridge bot to a DM
// and links, lists, unlinks from there; others' invites are ignored.
func TestManagementRoomOnDendrite(t *testing.T) {
	r := newASRig(t)
	phone := r.withPhone(t)
	r.start(t)
	ctx := t.Context()
	owner, bot := r.owner, r.mx.as.bot

	// A stranger's invite is not taken up: only the owner manages links.
	friend := newHuman(t, r.hs, "friend", "Friend")
	strange, err := friend.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bot}, IsDirect: true})
	if err != nil {
		t.Fatal(err)
	}

	dm, err := owner.cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", Invite: []id.UserID{bot}, IsDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	if hello := owner.notice(t, dm.RoomID, bot, "the bot's greeting"); !strings.Contains(hello, "links") || !strings.Contains(hello, "unlink") {
		t.Errorf("the greeting does not list the commands: %q", hello)
	}
	var member event.MemberEventContent
	if err := friend.cli.StateEvent(ctx, strange.RoomID, event.StateMember, bot.String(), &member); err != nil || member.Membership != event.MembershipInvite {
		t.Errorf("the bot's membership in a stranger's room is %q (%v), want it left invited", member.Membership, err)
	}

	if got := owner.command(t, dm.RoomID, bot, "links"); !strings.Contains(got, "**phone**: connected since 2026-11-01 09:00 UTC, account +15551234567 (Ann)") {
		t.Errorf("links answered %q", got)
	}
	if got := owner.command(t, dm.RoomID, bot, "chats fam"); !strings.Contains(got, "Family — `120363000000000001@g.us` (group)") || strings.Contains(got, "Bob") {
		t.Errorf("chats fam answered %q", got)
	}
	if got := owner.command(t, dm.RoomID, bot, "backfill Big Family 120"); !strings.Contains(got, "Asked the phone of phone for 120 older messages of Big Family") {
		t.Errorf("backfill answered %q", got)
	}
	if got := owner.command(t, dm.RoomID, bot, "backfill"); !strings.Contains(got, "Usage: `backfill [NAME] CHAT [COUNT]`") {
		t.Errorf("backfill without a chat answered %q", got)
	}
	if _, _, events := phone.Recorded(); !slices.Contains(events, "backfill Big Family 120") {
		t.Errorf("the phone's connector saw %q, want one backfill of Big Family, 120", events)
	}
	if got := owner.command(t, dm.RoomID, bot, "frobnicate"); !strings.Contains(got, "Unknown command `frobnicate`") {
		t.Errorf("an unknown command was answered %q", got)
	}
	if got := owner.command(t, dm.RoomID, bot, "unlink"); !strings.Contains(got, "Unlinked phone") {
		t.Errorf("unlink answered %q", got)
	}
	// Failures are worded here, with the room's own commands.
	if got := owner.command(t, dm.RoomID, bot, "unlink --local"); got != "Unlinking phone failed: phone is not linked" {
		t.Errorf("unlink --local of an unlinked phone answered %q", got)
	}
	if _, unlinks, _ := phone.Recorded(); !slices.Equal(unlinks, []bool{false, true}) {
		t.Errorf("the phone saw unlinks %v, want one that tells the server, then one that does not", unlinks)
	}
	phone.SetLink(func(context.Context, bridge.LinkOptions, func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
		return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkAlreadyLinked, Service: "WhatsApp", Account: &fakephone.LinkedAccount}
	})
	if got, want := owner.command(t, dm.RoomID, bot, "link"), "Linking phone failed: already linked to +15551234567 (Ann); run `unlink phone` first to link another account"; got != want {
		t.Errorf("a refused link answered %q, want %q", got, want)
	}

	// Linking by QR: the first code is posted as an image, each new code
	// replaces it by an edit, and the spent code is redacted at the end.
	next := make(chan struct{})
	phone.SetLink(func(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
		for _, code := range []string{"2@first-code,key,key", "2@second-code,key,key"} {
			progress(bridge.LinkProgress{Kind: bridge.ProgressQR, QR: code, Expires: time.Now().Add(20 * time.Second)})
			select {
			case <-next:
			case <-ctx.Done():
				return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkCancelled}
			}
		}
		return fakephone.LinkedAccount, nil
	})
	if _, err := owner.cli.SendText(ctx, dm.RoomID, "link"); err != nil {
		t.Fatal(err)
	}
	if got := owner.notice(t, dm.RoomID, bot, "the link instructions"); !strings.Contains(got, "Linked devices") {
		t.Errorf("the link instructions are %q", got)
	}
	isImage := func(evt *event.Event) bool {
		return evt.RoomID == dm.RoomID && evt.Sender == bot && evt.Type == event.EventMessage && evt.Content.AsMessage().MsgType == event.MsgImage
	}
	first := owner.next(t, "the first QR image", isImage)
	r.checkQR(t, first.Content.AsMessage().URL, "2@first-code,key,key")
	next <- struct{}{}
	edit := owner.next(t, "the second QR image", isImage)
	msg := edit.Content.AsMessage()
	if msg.RelatesTo.GetReplaceID() != first.ID || msg.NewContent == nil {
		t.Fatalf("the second code is not an edit of the first image: %+v", msg.RelatesTo)
	}
	r.checkQR(t, msg.NewContent.URL, "2@second-code,key,key")
	next <- struct{}{}
	if got := owner.notice(t, dm.RoomID, bot, "the link's outcome"); !strings.Contains(got, "Linked phone to +15551234567 (Ann)") {
		t.Errorf("the link ended with %q", got)
	}
	waitFor(t, "the spent QR code's redaction", func() bool {
		evt, err := owner.cli.GetEvent(ctx, dm.RoomID, first.ID)
		return err == nil && len(evt.Content.Raw) == 0
	})

	// A pairing code instead, for a phone number; then a cancelled link.
	phone.SetLink(func(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
		if opts.Phone != "" {
			progress(bridge.LinkProgress{Kind: bridge.ProgressPairingCode, PairingCode: "ABCD-EFGH"})
			return fakephone.LinkedAccount, nil
		}
		<-ctx.Done()
		return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkCancelled}
	})
	if got := owner.command(t, dm.RoomID, bot, "link phone +1 555 123 4567"); !strings.Contains(got, "Pairing code: **ABCD-EFGH**") {
		t.Errorf("the pairing code came as %q", got)
	}
	if got := owner.notice(t, dm.RoomID, bot, "the pairing outcome"); !strings.Contains(got, "Linked phone") {
		t.Errorf("the pairing link ended with %q", got)
	}
	if opts, _, _ := phone.Recorded(); len(opts) != 3 || opts[2].Phone != "+15551234567" {
		t.Errorf("the phone was linked with options %+v, want the number in international form", opts)
	}
	if _, err := owner.cli.SendText(ctx, dm.RoomID, "link"); err != nil {
		t.Fatal(err)
	}
	if got := owner.command(t, dm.RoomID, bot, "link"); !strings.Contains(got, "already in progress") {
		t.Errorf("a second link at once answered %q", got)
	}
	if got := owner.command(t, dm.RoomID, bot, "cancel"); got != "Linking cancelled." {
		t.Errorf("cancel answered %q", got)
	}

	// The room stays a management room across a restart; the stranger's
	// words there would be ignored, the owner's still answered.
	r.stopAndStart(t)
	if got := owner.command(t, dm.RoomID, r.mx.as.bot, "help"); !strings.Contains(got, "pairing code") {
		t.Errorf("help after a restart answered %q", got)
	}
}

// checkQR downloads uri and checks that a camera reads code from it: an
// independent decoder (qrscan), not our encoder's output again.
func (r *asRig) checkQR(t *testing.T, uri id.ContentURIString, code string) {
	t.Helper()
	parsed, err := uri.Parse()
	if err != nil {
		t.Fatalf("the QR image's url %q: %v", uri, err)
	}
	got, err := r.owner.cli.DownloadBytes(t.Context(), parsed)
	if err != nil {
		t.Fatal(err)
	}
	if read, err := qrscan.FromImage(got); err != nil || read != code {
		t.Errorf("the image reads %q (%v), want the QR code of %q", read, err, code)
	}
}

// stopAndStart stops the bridge and opens it again on the same state.
func (r *asRig) stopAndStart(t *testing.T) {
	t.Helper()
	r.api.Close()
	ctx, cancel := context.WithTimeout(context.Background(), botWait)
	defer cancel()
	if err := r.b.Stop(ctx); err != nil {
		t.Fatalf("stop the bridge: %v", err)
	}
	r.start(t)
}

// TestPortalShowsTheOriginsDescription: the groups of an origin that lists
// and describes its chats (WhatsApp) get portals at start, with the chat's
// topic and picture; a message lands in that portal, and the ghost gets
// the sender's picture, all through the real core.
func TestPortalShowsTheOriginsDescription(t *testing.T) {
	r := newASRig(t)
	phone := r.withRoutedPhone(t)
	const group, bob = "120363000000000001@g.us", "15550002222@s.whatsapp.net"
	picture := grayPNG(t, 5)
	phone.Describe(
		bridge.ChatDescription{Name: "Family", Topic: "Weekend plans", AvatarID: "pic-1", Avatar: &bridge.Media{MIME: "image/png", Name: "family.png", Ref: "pic"}}, group,
		bridge.SenderDescription{Name: "Bob", AvatarID: "face-1", Avatar: &bridge.Media{MIME: "image/png", Name: "bob.png", Ref: "face"}}, bob,
		picture)
	r.start(t)
	ctx := t.Context()
	// The phone's groups get their portals at start (portals_at_start:
	// groups), its contacts do not.
	var room id.RoomID
	waitFor(t, "the groups' portals", func() bool {
		room, _ = r.mx.as.portalRoom(ctx, bridge.ChatRef{Connector: "phone", ID: group})
		other, _ := r.mx.as.portalRoom(ctx, bridge.ChatRef{Connector: "phone", ID: "120363000000000002@g.us"})
		return room != "" && other != ""
	})
	if dm, err := r.mx.as.portalRoom(ctx, bridge.ChatRef{Connector: "phone", ID: "15550001111@s.whatsapp.net"}); err != nil || dm != "" {
		t.Errorf("a contact got a portal at start: %q (%v)", dm, err)
	}
	phone.Say(t, bridge.Event{Kind: bridge.KindMessage, Chat: bridge.ChatRef{ID: group, Name: "Family"}, ID: "g1",
		Sender: bridge.Sender{ID: bob, Name: "Bob"}, Time: time.Now(), Text: "hi family"})
	if _, err := r.owner.cli.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	var topic event.TopicEventContent
	var avatar event.RoomAvatarEventContent
	if err := r.owner.cli.StateEvent(ctx, room, event.StateTopic, "", &topic); err != nil || topic.Topic != "Weekend plans" {
		t.Errorf("the portal's topic is %q (%v), want the group's", topic.Topic, err)
	}
	if err := r.owner.cli.StateEvent(ctx, room, event.StateRoomAvatar, "", &avatar); err != nil {
		t.Fatalf("the portal has no picture: %v", err)
	}
	if got := download(t, r.owner.cli, avatar.URL); !bytes.Equal(got, picture) {
		t.Errorf("the portal's picture is %d bytes, not the group's %d", len(got), len(picture))
	}
	ghost := r.mx.as.ghostID(bob)
	waitFor(t, "Bob's message", func() bool {
		got, err := roomBodiesErr(ctx, r.owner.cli, room, ghost)
		return err == nil && len(got) == 1 && got[0] == "hi family"
	})
	url, err := r.owner.cli.GetAvatarURL(ctx, ghost)
	if err != nil || url.IsEmpty() {
		t.Fatalf("Bob's ghost has no picture: %v %v", url, err)
	}
	if got := download(t, r.owner.cli, url.CUString()); !bytes.Equal(got, picture) {
		t.Errorf("the ghost's picture is %d bytes, not Bob's %d", len(got), len(picture))
	}
}
