package fakewa

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/appstate"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/proto/waServerSync"
	"go.mau.fi/whatsmeow/proto/waSyncAction"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/hkdfutil"
	waLog "go.mau.fi/whatsmeow/util/log"
	"google.golang.org/protobuf/proto"
)

// appState is an account's app state as WhatsApp keeps it: the phone's
// sync key, and per collection the encrypted patches in order with their
// LT hash. Patches are made by whatsmeow's own appstate.Processor on an
// in-memory device, so they are exactly what a client decodes.
//
// Lock order: Phone.mu, then appState.mu, then Server.mu.
type appState struct {
	mu      sync.Mutex
	keyID   []byte
	keyData []byte
	keyFP   *waE2E.AppStateSyncKeyFingerprint
	keyTime int64 // ms
	proc    *appstate.Processor
	colls   map[appstate.WAPatchName]*appCollection
}

type appCollection struct {
	state   appstate.HashState
	patches [][]byte // marshaled SyncdPatch with its version: version i+1 at i
	// records is the current value of each index (by index MAC), for
	// snapshots.
	records map[string]*waServerSync.SyncdRecord
}

func (as *appState) started() bool {
	as.mu.Lock()
	defer as.mu.Unlock()
	return as.proc != nil
}

// startLocked makes the account's app state at first use: a sync key, and
// the phone's own push name in critical_block (whatsmeow learns its push
// name only from there); as.mu is held.
func (as *appState) startLocked(ctx context.Context, p *Phone) ([]changedCollection, error) {
	if as.proc != nil {
		return nil, nil
	}
	as.keyID = append([]byte{0, 0, 0, 0}, randomBytes(2)...)
	as.keyData = randomBytes(32)
	as.keyTime = p.srv.clock().UnixMilli()
	as.keyFP = &waE2E.AppStateSyncKeyFingerprint{
		RawID: proto.Uint32(binary.BigEndian.Uint32(randomBytes(4))), CurrentIndex: proto.Uint32(0), DeviceIndexes: []uint32{0}}
	as.proc = newAppStateProcessor(as.keyID, as.keyData)
	as.colls = map[appstate.WAPatchName]*appCollection{}
	p.srv.mu.Lock()
	name := p.PushName
	p.srv.mu.Unlock()
	return as.encodeLocked(ctx, appstate.BuildSettingPushName(name))
}

// newAppStateProcessor is whatsmeow's app state codec over memory stores
// holding one key.
func newAppStateProcessor(keyID, keyData []byte) *appstate.Processor {
	keys := &memAppStateKeys{keys: map[string]store.AppStateSyncKey{}}
	keys.PutAppStateSyncKey(context.Background(), keyID, store.AppStateSyncKey{Data: keyData})
	return appstate.NewProcessor(&store.Device{AppStateKeys: keys, AppState: newMemAppState()}, waLog.Noop)
}

type changedCollection struct {
	name    appstate.WAPatchName
	version uint64
}

// encodeLocked adds one patch to a collection; as.mu is held.
func (as *appState) encodeLocked(ctx context.Context, info appstate.PatchInfo) ([]changedCollection, error) {
	coll := as.colls[info.Type]
	if coll == nil {
		coll = &appCollection{records: map[string]*waServerSync.SyncdRecord{}}
		as.colls[info.Type] = coll
	}
	raw, err := as.proc.EncodePatch(ctx, as.keyID, coll.state, info)
	if err != nil {
		return nil, err
	}
	var patch waServerSync.SyncdPatch
	if err := proto.Unmarshal(raw, &patch); err != nil {
		return nil, err
	}
	// EncodePatch leaves the version to the server; its MACs cover the
	// next one.
	patch.Version = &waServerSync.SyncdVersion{Version: proto.Uint64(coll.state.Version + 1)}
	if err := as.appendLocked(ctx, info.Type, coll, &patch); err != nil {
		return nil, err
	}
	return []changedCollection{{info.Type, coll.state.Version}}, nil
}

// appendLocked checks a patch as a client would (MACs, LT hash, version)
// against the collection and, if it holds, makes it the next version;
// as.mu is held.
func (as *appState) appendLocked(ctx context.Context, name appstate.WAPatchName, coll *appCollection, patch *waServerSync.SyncdPatch) error {
	stored, err := proto.Marshal(patch)
	if err != nil {
		return err
	}
	// Decoding decrypts the mutations in place: decode a copy.
	var check waServerSync.SyncdPatch
	if err := proto.Unmarshal(stored, &check); err != nil {
		return err
	}
	_, state, err := as.proc.DecodePatches(ctx, &appstate.PatchList{Name: name, Patches: []*waServerSync.SyncdPatch{&check}}, coll.state, true)
	if err != nil {
		return err
	}
	coll.state = state
	coll.patches = append(coll.patches, stored)
	for _, m := range patch.GetMutations() {
		key := string(m.GetRecord().GetIndex().GetBlob())
		if m.GetOperation() == waServerSync.SyncdMutation_REMOVE {
			delete(coll.records, key)
		} else {
			coll.records[key] = m.GetRecord()
		}
	}
	return nil
}

// applyAppState makes a change on the phone and tells the account's
// devices (server_sync) which collections moved.
func (p *Phone) applyAppState(ctx context.Context, info appstate.PatchInfo) error {
	as := &p.appState
	as.mu.Lock()
	changed, err := as.startLocked(ctx, p)
	if err == nil {
		var more []changedCollection
		more, err = as.encodeLocked(ctx, info)
		changed = append(changed, more...)
	}
	as.mu.Unlock()
	if err != nil {
		return err
	}
	p.srv.notifyAppState(p, changed, nil)
	return nil
}

// notifyAppState sends the server_sync notification WhatsApp sends an
// account's devices when its app state changes, to all but except.
func (s *Server) notifyAppState(p *Phone, changed []changedCollection, except *companion) {
	if len(changed) == 0 {
		return
	}
	latest := map[appstate.WAPatchName]uint64{}
	var names []appstate.WAPatchName
	for _, c := range changed {
		if _, ok := latest[c.name]; !ok {
			names = append(names, c.name)
		}
		latest[c.name] = c.version
	}
	var colls []waBinary.Node
	for _, n := range names {
		colls = append(colls, waBinary.Node{Tag: "collection", Attrs: waBinary.Attrs{"name": string(n), "version": latest[n]}})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, comp := range liveCompanions(p) {
		if comp == except {
			continue
		}
		s.deliver(comp, "notification", waBinary.Node{Tag: "notification", Attrs: waBinary.Attrs{
			"from": types.ServerJID, "type": "server_sync", "id": s.nextID(), "t": s.clock().Unix()}, Content: colls})
	}
}

// ApplyAppState makes any change on the phone's app state, such as
// whatsmeow's appstate.BuildMute, BuildPin or BuildArchive build, and
// tells the account's devices. Note that whatsmeow treats every fetch of a
// collection it has at version 0 as a full sync, which gives no events:
// make a collection's first change before linking a device whose events
// a test waits for.
func (p *Phone) ApplyAppState(ctx context.Context, patch appstate.PatchInfo) error {
	return p.applyAppState(ctx, patch)
}

// SetContact saves a contact in the phone's address book: a contact
// mutation in critical_unblock_low, which fills the client's contact
// store (a full sync) or gives it events.Contact (a later change). The
// account's first app state change also makes its sync key; devices
// linked from then on get it at once, devices already linked ask for it.
func (p *Phone) SetContact(ctx context.Context, jid types.JID, fullName, firstName string) error {
	jid = jid.ToNonAD()
	act := &waSyncAction.ContactAction{FullName: proto.String(fullName), SaveOnPrimaryAddressbook: proto.Bool(true)}
	if firstName != "" {
		act.FirstName = proto.String(firstName)
	}
	// WhatsApp names the person's other address beside the one indexed.
	p.srv.mu.Lock()
	if o := p.srv.phoneOf(jid); o != nil {
		if jid.Server == types.DefaultUserServer {
			act.LidJID = proto.String(o.LID.String())
		} else {
			act.PnJID = proto.String(o.PN.String())
		}
	}
	p.srv.mu.Unlock()
	return p.applyAppState(ctx, appstate.PatchInfo{Type: appstate.WAPatchCriticalUnblockLow, Mutations: []appstate.MutationInfo{{
		Index: []string{appstate.IndexContact, jid.String()}, Version: 2,
		Value: &waSyncAction.SyncActionValue{ContactAction: act},
	}}})
}

// SetPushName changes the account's own push name: what its messages'
// notify attribute carries, and the setting_pushName in critical_block
// that gives its devices events.PushNameSetting.
func (p *Phone) SetPushName(ctx context.Context, name string) error {
	p.mu.Lock()
	p.srv.mu.Lock()
	p.PushName = name
	p.srv.mu.Unlock()
	p.mu.Unlock()
	return p.applyAppState(ctx, appstate.BuildSettingPushName(name))
}

// ShareAppStateKeys sends the account's app state sync key to all its
// linked devices (APP_STATE_SYNC_KEY_SHARE), making it if there is none
// yet; each device then fetches every collection.
func (p *Phone) ShareAppStateKeys(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	as := &p.appState
	as.mu.Lock()
	changed, err := as.startLocked(ctx, p)
	as.mu.Unlock()
	if err != nil {
		return err
	}
	p.srv.notifyAppState(p, changed, nil)
	return p.shareAppStateKeyLocked(ctx, nil)
}

// shareAppStateKeyLocked sends the key to one device (all when to is
// nil); p.mu is held.
func (p *Phone) shareAppStateKeyLocked(ctx context.Context, to *companion) error {
	as := &p.appState
	as.mu.Lock()
	key := &waE2E.AppStateSyncKey{
		KeyID:   &waE2E.AppStateSyncKeyId{KeyID: as.keyID},
		KeyData: &waE2E.AppStateSyncKeyData{KeyData: as.keyData, Fingerprint: as.keyFP, Timestamp: proto.Int64(as.keyTime)},
	}
	as.mu.Unlock()
	if key.KeyID.KeyID == nil {
		return errors.New("the account has no app state key")
	}
	_, err := p.sendPeerToLocked(ctx, &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{
		Type:                 waE2E.ProtocolMessage_APP_STATE_SYNC_KEY_SHARE.Enum(),
		AppStateSyncKeyShare: &waE2E.AppStateSyncKeyShare{Keys: []*waE2E.AppStateSyncKey{key}},
	}}, to)
	return err
}

// AppStateVersion is a collection's current version (0: empty).
func (p *Phone) AppStateVersion(name appstate.WAPatchName) uint64 {
	as := &p.appState
	as.mu.Lock()
	defer as.mu.Unlock()
	if c := as.colls[name]; c != nil {
		return c.state.Version
	}
	return 0
}

func init() {
	iqHandlers = append(iqHandlers, appStateIQ)
	protocolMessageHandlers = append(protocolMessageHandlers, answerAppStateKeyRequest)
}

// answerAppStateKeyRequest is the phone answering a device that lacks a
// key (whatsmeow asks when a patch names a key it does not have): it
// shares the keys it has of those asked for, with that device only.
func answerAppStateKeyRequest(p *Phone, ctx context.Context, from *companion, _ string, msg *waE2E.Message, peer bool) {
	pm := msg.GetProtocolMessage()
	if !peer || pm.GetType() != waE2E.ProtocolMessage_APP_STATE_SYNC_KEY_REQUEST {
		return
	}
	as := &p.appState
	as.mu.Lock()
	have := false
	for _, id := range pm.GetAppStateSyncKeyRequest().GetKeyIDs() {
		if as.keyID != nil && bytes.Equal(id.GetKeyID(), as.keyID) {
			have = true
		}
	}
	as.mu.Unlock()
	if !have {
		p.srv.logf("fakewa: %s was asked for app state keys it does not have", p.PN.User)
		return
	}
	if err := p.shareAppStateKeyLocked(context.WithoutCancel(ctx), from); err != nil {
		p.srv.logf("fakewa: %s could not answer %v's app state key request: %v", p.PN.User, from.JID(), err)
	}
}

// appStateIQ answers a device's app state sync: for each collection asked
// for, a snapshot (a full sync of a collection that has state) or the
// patches after the version it has; a collection that carries a patch is
// the device's own change, which the server checks and adds.
func appStateIQ(s *Server, c *conn, comp *companion, iq *waBinary.Node, xmlns, typ string, first waBinary.Node) bool {
	if xmlns != "w:sync:app:state" || typ != "set" || first.Tag != "sync" {
		return false
	}
	p := comp.phone
	ctx := context.Background()
	var out []waBinary.Node
	var changed []changedCollection
	for _, req := range first.GetChildrenByTag("collection") {
		ag := req.AttrGetter()
		name := appstate.WAPatchName(ag.String("name"))
		from, _ := ag.GetUint64("version", false)
		snapshot := ag.OptionalBool("return_snapshot")
		if !ag.OK() || !knownCollection(name) {
			c.send(iqError(iq, 400, "bad-request"))
			return true
		}
		if patch, ok := req.GetOptionalChildByTag("patch"); ok {
			n, ch := p.appState.accept(ctx, name, from, &patch)
			out = append(out, n)
			changed = append(changed, ch...)
			continue
		}
		n, err := p.appState.collectionNode(ctx, s, name, from, snapshot)
		if err != nil {
			s.logf("fakewa: app state %s for %v: %v", name, comp.JID(), err)
			c.send(iqError(iq, 500, "internal-server-error"))
			return true
		}
		out = append(out, n)
	}
	c.send(result(iq, waBinary.Node{Tag: "sync", Content: out}))
	s.notifyAppState(p, changed, comp)
	return true
}

func knownCollection(name appstate.WAPatchName) bool {
	for _, n := range appstate.AllPatchNames {
		if n == name {
			return true
		}
	}
	return false
}

// collectionNode is one collection's answer to a sync.
func (as *appState) collectionNode(ctx context.Context, s *Server, name appstate.WAPatchName, from uint64, snapshot bool) (waBinary.Node, error) {
	as.mu.Lock()
	defer as.mu.Unlock()
	n := waBinary.Node{Tag: "collection", Attrs: waBinary.Attrs{"name": string(name), "version": uint64(0)}}
	coll := as.colls[name]
	if coll == nil {
		return n, nil
	}
	n.Attrs["version"] = coll.state.Version
	if snapshot && coll.state.Version > 0 {
		ref, err := as.snapshotLocked(ctx, s, name, coll)
		if err != nil {
			return n, err
		}
		n.Content = []waBinary.Node{{Tag: "snapshot", Content: ref}}
		return n, nil
	}
	if from < uint64(len(coll.patches)) {
		n.Content = []waBinary.Node{{Tag: "patches", Content: patchNodes(coll.patches[from:])}}
	}
	return n, nil
}

func patchNodes(patches [][]byte) []waBinary.Node {
	out := make([]waBinary.Node, len(patches))
	for i, raw := range patches {
		out[i] = waBinary.Node{Tag: "patch", Content: raw}
	}
	return out
}

// snapshotLocked stores the collection's current records as a snapshot
// on the media host, as WhatsApp answers a full sync, and returns the
// ExternalBlobReference naming it; as.mu is held.
func (as *appState) snapshotLocked(ctx context.Context, s *Server, name appstate.WAPatchName, coll *appCollection) ([]byte, error) {
	keys := make([]string, 0, len(coll.records))
	for k := range coll.records {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	snap := &waServerSync.SyncdSnapshot{
		Version: &waServerSync.SyncdVersion{Version: proto.Uint64(coll.state.Version)},
		Mac:     snapshotMAC(as.keyData, coll.state, name),
		KeyID:   &waServerSync.KeyId{ID: as.keyID},
	}
	for _, k := range keys {
		snap.Records = append(snap.Records, coll.records[k])
	}
	raw, err := proto.Marshal(snap)
	if err != nil {
		return nil, err
	}
	// The snapshot must decode, with its MACs, to the collection's state.
	var check waServerSync.SyncdSnapshot
	if err := proto.Unmarshal(raw, &check); err != nil {
		return nil, err
	}
	_, state, err := newAppStateProcessor(as.keyID, as.keyData).DecodePatches(ctx,
		&appstate.PatchList{Name: name, Snapshot: &check}, appstate.HashState{}, true)
	if err != nil {
		return nil, fmt.Errorf("snapshot does not decode: %w", err)
	}
	if state != coll.state {
		return nil, errors.New("snapshot's LT hash is not the collection's")
	}
	info, err := s.EncryptMedia(raw, whatsmeow.MediaAppState)
	if err != nil {
		return nil, err
	}
	return proto.Marshal(&waServerSync.ExternalBlobReference{
		MediaKey: info.MediaKey, DirectPath: proto.String(info.DirectPath), Handle: proto.String(NewMessageID()),
		FileSizeBytes: proto.Uint64(info.FileLength), FileSHA256: info.FileSHA256, FileEncSHA256: info.FileEncSHA256,
	})
}

// snapshotMAC is whatsmeow's (unexported) generateSnapshotMAC: an HMAC
// with the key's snapshot MAC key over the LT hash, version and name.
func snapshotMAC(keyData []byte, state appstate.HashState, name appstate.WAPatchName) []byte {
	k := hkdfutil.SHA256(keyData, nil, []byte("WhatsApp Mutation Keys"), 160)[96:128]
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], state.Version)
	m := hmac.New(sha256.New, k)
	m.Write(state.Hash[:])
	m.Write(v[:])
	m.Write([]byte(name))
	return m.Sum(nil)
}

// accept takes a device's own change (whatsmeow's SendAppState): it must
// build on the collection's current version, else 409 with the patches
// it lacks (the client applies them and tries again), and its MACs must
// hold. The other devices then hear of it.
func (as *appState) accept(ctx context.Context, name appstate.WAPatchName, version uint64, n *waBinary.Node) (waBinary.Node, []changedCollection) {
	as.mu.Lock()
	defer as.mu.Unlock()
	fail := func(code int, text string, content ...waBinary.Node) waBinary.Node {
		return waBinary.Node{Tag: "collection", Attrs: waBinary.Attrs{"name": string(name), "type": "error"},
			Content: append([]waBinary.Node{{Tag: "error", Attrs: waBinary.Attrs{"code": code, "text": text}}}, content...)}
	}
	raw, _ := n.Content.([]byte)
	if as.proc == nil {
		return fail(400, "bad-request"), nil // no key has been shared to encrypt with
	}
	coll := as.colls[name]
	if coll == nil {
		coll = &appCollection{records: map[string]*waServerSync.SyncdRecord{}}
		as.colls[name] = coll
	}
	if version != coll.state.Version {
		var missing []waBinary.Node
		if version < uint64(len(coll.patches)) {
			missing = []waBinary.Node{{Tag: "patches", Content: patchNodes(coll.patches[version:])}}
		}
		return fail(409, "conflict", missing...), nil
	}
	var patch waServerSync.SyncdPatch
	if err := proto.Unmarshal(raw, &patch); err != nil {
		return fail(400, "bad-request"), nil
	}
	patch.Version = &waServerSync.SyncdVersion{Version: proto.Uint64(version + 1)}
	if err := as.appendLocked(ctx, name, coll, &patch); err != nil {
		return fail(400, "bad-request"), nil
	}
	return waBinary.Node{Tag: "collection", Attrs: waBinary.Attrs{"name": string(name), "version": coll.state.Version}},
		[]changedCollection{{name, coll.state.Version}}
}

// memAppStateKeys and memAppState are the in-memory stores the phone's
// app state processor works on.
type memAppStateKeys struct {
	mu     sync.Mutex
	keys   map[string]store.AppStateSyncKey
	latest []byte
}

func (m *memAppStateKeys) PutAppStateSyncKey(_ context.Context, id []byte, key store.AppStateSyncKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys[string(id)] = key
	m.latest = id
	return nil
}

func (m *memAppStateKeys) GetAppStateSyncKey(_ context.Context, id []byte) (*store.AppStateSyncKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if k, ok := m.keys[string(id)]; ok {
		return &k, nil
	}
	return nil, nil
}

func (m *memAppStateKeys) GetLatestAppStateSyncKeyID(context.Context) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.latest, nil
}

type memAppState struct {
	mu       sync.Mutex
	versions map[string]appstate.HashState
	macs     map[string]map[string][]byte // collection → index MAC → value MAC
}

func newMemAppState() *memAppState {
	return &memAppState{versions: map[string]appstate.HashState{}, macs: map[string]map[string][]byte{}}
}

func (m *memAppState) PutAppStateVersion(_ context.Context, name string, version uint64, hash [128]byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.versions[name] = appstate.HashState{Version: version, Hash: hash}
	return nil
}

func (m *memAppState) GetAppStateVersion(_ context.Context, name string) (uint64, [128]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.versions[name]
	return v.Version, v.Hash, nil
}

func (m *memAppState) DeleteAppStateVersion(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.versions, name)
	delete(m.macs, name)
	return nil
}

func (m *memAppState) PutAppStateMutationMACs(_ context.Context, name string, _ uint64, muts []store.AppStateMutationMAC) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.macs[name] == nil {
		m.macs[name] = map[string][]byte{}
	}
	for _, mm := range muts {
		m.macs[name][string(mm.IndexMAC)] = mm.ValueMAC
	}
	return nil
}

func (m *memAppState) DeleteAppStateMutationMACs(_ context.Context, name string, indexMACs [][]byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, im := range indexMACs {
		delete(m.macs[name], string(im))
	}
	return nil
}

func (m *memAppState) GetAppStateMutationMAC(_ context.Context, name string, indexMAC []byte) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.macs[name][string(indexMAC)], nil
}
