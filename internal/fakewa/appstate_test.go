package fakewa

import (
	"context"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/appstate"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/proto/waHistorySync"
	"go.mau.fi/whatsmeow/proto/waServerSync"
	"go.mau.fi/whatsmeow/proto/waSyncAction"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

func contactName(t *testing.T, cl *client, jid types.JID) string {
	t.Helper()
	// GetAllContacts copies under whatsmeow's lock; GetContact does not.
	all, err := cl.Store.Contacts.GetAllContacts(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return all[jid].FullName
}

// fullSynced waits for the end of the client's full sync of a collection.
func fullSynced(t *testing.T, cl *client, name appstate.WAPatchName) {
	t.Helper()
	waitEvent[*events.AppStateSyncComplete](t, cl, func(e *events.AppStateSyncComplete) bool { return e.Name == name })
}

// Contacts saved on the phone reach a new device at its full sync (the
// store is filled, no events), later changes come as events, and a device
// linked later gets the current state.
func TestAppStateContacts(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	carol := srv.NewPhone("15550003333", "100000000000003", "Carol")
	ctx := ctxT(t)
	if err := alice.SetContact(ctx, bob.PN, "Bob Builder", "Bob"); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetContact(ctx, carol.LID, "Carol Singer", "Carol"); err != nil {
		t.Fatal(err)
	}
	cl := link(t, srv, alice)
	fullSynced(t, cl, appstate.WAPatchCriticalUnblockLow)
	fullSynced(t, cl, appstate.WAPatchCriticalBlock)
	if got := contactName(t, cl, bob.PN); got != "Bob Builder" {
		t.Fatalf("after the full sync bob is %q", got)
	}
	if got := contactName(t, cl, carol.LID); got != "Carol Singer" {
		t.Fatalf("after the full sync carol is %q", got)
	}
	if cl.Store.PushName != "Alice" {
		t.Fatalf("own push name %q after the full sync", cl.Store.PushName)
	}
	for _, e := range cl.events.all() {
		if c, ok := e.(*events.Contact); ok {
			t.Fatalf("a full sync gave a contact event: %+v", c)
		}
	}
	// A full sync is answered as WhatsApp answers it: a snapshot on the
	// media host, which the client downloads and parses.
	full, err := alice.appState.collectionNode(ctx, srv, appstate.WAPatchCriticalUnblockLow, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	list, err := appstate.ParsePatchList(ctx, &full, func(ctx context.Context, ref *waServerSync.ExternalBlobReference) ([]byte, error) {
		return cl.Download(ctx, ref)
	})
	if err != nil || list.Snapshot == nil || len(list.Snapshot.GetRecords()) != 2 || len(list.Patches) != 0 {
		t.Fatalf("full sync answer %s parsed to %+v (%v)", full.XMLString(), list, err)
	}

	if err := alice.SetContact(ctx, bob.PN, "Robert Builder", "Robert"); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent[*events.Contact](t, cl, nil)
	if ev.JID != bob.PN || ev.Action.GetFullName() != "Robert Builder" || ev.Action.GetLidJID() != bob.LID.String() || ev.FromFullSync {
		t.Fatalf("contact event %+v", ev)
	}
	if got := contactName(t, cl, bob.PN); got != "Robert Builder" {
		t.Fatalf("after the change bob is %q", got)
	}
	if err := alice.SetPushName(ctx, "Alice A."); err != nil {
		t.Fatal(err)
	}
	pn := waitEvent[*events.PushNameSetting](t, cl, nil)
	if pn.Action.GetName() != "Alice A." || cl.Store.PushName != "Alice A." {
		t.Fatalf("push name event %+v, store %q", pn, cl.Store.PushName)
	}

	cl2 := link(t, srv, alice)
	fullSynced(t, cl2, appstate.WAPatchCriticalUnblockLow)
	fullSynced(t, cl2, appstate.WAPatchCriticalBlock)
	if got := contactName(t, cl2, bob.PN); got != "Robert Builder" {
		t.Fatalf("a device linked later has bob as %q", got)
	}
	if got := contactName(t, cl2, carol.LID); got != "Carol Singer" {
		t.Fatalf("a device linked later has carol as %q", got)
	}
	if cl2.Store.PushName != "Alice A." {
		t.Fatalf("a device linked later has the push name %q", cl2.Store.PushName)
	}
}

// A device that was linked before the account had app state hears of the
// first change, lacks the key, asks the phone for it and then syncs.
func TestAppStateKeyRequest(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	// A phone always writes to a new device at once (history, keys);
	// whatsmeow can only ask it for keys over the session that makes.
	alice.HistoryOnLink = []*waHistorySync.HistorySync{alice.NewHistorySync(waHistorySync.HistorySync_INITIAL_BOOTSTRAP)}
	cl := link(t, srv, alice)
	waitEvent[*events.HistorySync](t, cl, nil)
	ctx := ctxT(t)
	if err := alice.SetContact(ctx, bob.PN, "Bob Builder", "Bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.WaitMessage(ctx, func(m Message) bool {
		return m.FromMe && m.Msg.GetProtocolMessage().GetType() == waE2E.ProtocolMessage_APP_STATE_SYNC_KEY_REQUEST
	}); err != nil {
		t.Fatal("the client did not ask for the key")
	}
	fullSynced(t, cl, appstate.WAPatchCriticalUnblockLow)
	if got := contactName(t, cl, bob.PN); got != "Bob Builder" {
		t.Fatalf("after the key request bob is %q", got)
	}
}

// A device's own change (SendAppState) is checked and kept by the server
// and the other device hears of it; a change built on an old version is
// refused (409) with the patches it lacks, which whatsmeow applies before
// sending again.
func TestAppStateFromDevice(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	ctx := ctxT(t)
	// regular_high has state before the devices link: a first change to an
	// empty collection would be a full sync for them, without events.
	if err := alice.ApplyAppState(ctx, appstate.BuildMute(bob.PN, false, 0)); err != nil {
		t.Fatal(err)
	}
	cl := link(t, srv, alice)
	fullSynced(t, cl, appstate.WAPatchRegularHigh)
	cl2 := link(t, srv, alice)
	fullSynced(t, cl2, appstate.WAPatchRegularHigh)
	if err := cl.SendAppState(ctx, appstate.BuildMute(bob.PN, true, 0)); err != nil {
		t.Fatal(err)
	}
	if v := alice.AppStateVersion(appstate.WAPatchRegularHigh); v != 2 {
		t.Fatalf("regular_high is at version %d after the device's change", v)
	}
	mute := waitEvent[*events.Mute](t, cl2, nil)
	if mute.JID != bob.PN || !mute.Action.GetMuted() {
		t.Fatalf("the other device got %+v", mute)
	}

	// A change on the phone whose notification has not reached cl yet.
	as := &alice.appState
	as.mu.Lock()
	_, err := as.encodeLocked(ctx, appstate.BuildMute(bob.PN, false, 0))
	as.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.SendAppState(ctx, appstate.BuildMute(bob.PN, true, time.Hour)); err != nil {
		t.Fatal(err)
	}
	if v := alice.AppStateVersion(appstate.WAPatchRegularHigh); v != 4 {
		t.Fatalf("regular_high at version %d after the conflict, want 4", v)
	}
	unmute := waitEvent[*events.Mute](t, cl, func(e *events.Mute) bool { return !e.Action.GetMuted() })
	if unmute.JID != bob.PN {
		t.Fatalf("the conflict's missing patch gave %+v", unmute)
	}
}

// The server keeps a device's patch only if its MACs hold, as WhatsApp
// does: a patch with one byte changed is refused and changes nothing.
func TestAppStatePatchChecked(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	ctx := ctxT(t)
	if err := alice.SetContact(ctx, bob.PN, "Bob Builder", "Bob"); err != nil {
		t.Fatal(err)
	}
	as := &alice.appState
	name := appstate.WAPatchCriticalUnblockLow
	// A device's patch: its own processor, its own copy of the state.
	dev := newAppStateProcessor(as.keyID, as.keyData)
	as.mu.Lock()
	var copies [][]byte
	for _, raw := range as.colls[name].patches {
		copies = append(copies, raw)
	}
	as.mu.Unlock()
	var list appstate.PatchList
	list.Name = name
	for _, raw := range copies {
		var p waServerSync.SyncdPatch
		if err := proto.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		list.Patches = append(list.Patches, &p)
	}
	_, state, err := dev.DecodePatches(ctx, &list, appstate.HashState{}, true)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := dev.EncodePatch(ctx, as.keyID, state, appstate.PatchInfo{Type: name, Mutations: []appstate.MutationInfo{{
		Index: []string{appstate.IndexContact, bob.PN.String()}, Version: 2,
		Value: &waSyncAction.SyncActionValue{ContactAction: &waSyncAction.ContactAction{FullName: proto.String("Mallory")}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	for what, tamper := range map[string]func(*waServerSync.SyncdPatch){
		"value":        func(p *waServerSync.SyncdPatch) { p.Mutations[0].Record.Value.Blob[3] ^= 1 },
		"index MAC":    func(p *waServerSync.SyncdPatch) { p.Mutations[0].Record.Index.Blob[3] ^= 1 },
		"patch MAC":    func(p *waServerSync.SyncdPatch) { p.PatchMAC[3] ^= 1 },
		"snapshot MAC": func(p *waServerSync.SyncdPatch) { p.SnapshotMAC[3] ^= 1 },
	} {
		var p waServerSync.SyncdPatch
		if err := proto.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		tamper(&p)
		bad, err := proto.Marshal(&p)
		if err != nil {
			t.Fatal(err)
		}
		n, changed := as.accept(ctx, name, state.Version, &waBinary.Node{Tag: "patch", Content: bad})
		if n.Attrs["type"] != "error" || len(changed) != 0 || alice.AppStateVersion(name) != state.Version {
			t.Fatalf("a patch with its %s changed was taken: %s", what, n.XMLString())
		}
	}
	n, changed := as.accept(ctx, name, state.Version, &waBinary.Node{Tag: "patch", Content: raw})
	if n.Attrs["type"] == "error" || len(changed) != 1 || alice.AppStateVersion(name) != state.Version+1 {
		t.Fatalf("intact patch refused: %s", n.XMLString())
	}
}
