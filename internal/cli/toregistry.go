package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/octohelm/crpe/internal/archive"
	"github.com/octohelm/crpe/internal/auth"
	"github.com/octohelm/crpe/internal/parts"
	"github.com/octohelm/crpe/internal/registrypush"
	"github.com/octohelm/crpe/internal/sigverify"
)

// registryFlags are crpe import's flags for a site registry.
type registryFlags struct {
	target             string
	flatten, plainHTTP bool
	username, password string
	caFile             string
	jobs               int
	chunkMiB           int
	spoolDir           string
	maxSpoolMiB        int
}

func (r *registryFlags) add(f *pflag.FlagSet) {
	r.addAs(f, "to-registry", "push into this site registry: HOST[:PORT][/PREFIX]")
}

// addAs adds the flags with the target flag named target (crpe import
// --to-registry, crpe agent --registry).
func (r *registryFlags) addAs(f *pflag.FlagSet, target, help string) {
	w := "with --" + target + ": "
	f.StringVar(&r.target, target, "", help)
	f.BoolVar(&r.flatten, "flatten", false, w+"one path component per repository, PREFIX/docker.io_library_nginx (registries that limit path depth)")
	f.StringVar(&r.username, "username", "", w+"the registry user (else Docker's config.json and credential helpers)")
	f.StringVar(&r.password, "password", "", w+"the registry password (CRPE_PASSWORD keeps it off the command line)")
	f.StringVar(&r.caFile, "ca-file", "", w+"PEM CA bundle the registry's certificate chains to (a site CA)")
	f.BoolVar(&r.plainHTTP, "plain-http", false, w+"allow plain HTTP (loopback registries always may)")
	f.IntVar(&r.jobs, "jobs", registrypush.DefaultJobs, w+"blobs uploaded (and HEADs asked) at once")
	f.IntVar(&r.chunkMiB, "chunk-size", registrypush.DefaultChunkSize>>20, w+"MiB per upload chunk of a big layer read from a stream (a broken chunk resumes; at most jobs × chunk-size MiB are held in memory); given, it also bounds each request of a layer sent from an archive file (else one request per layer)")
	f.StringVar(&r.spoolDir, "spool-dir", "", w+"folder where big layers wait for an upload slot as the archive is read (unlinked temp files), so that jobs uploads run at once (for a registry far away; on loopback it is slower: bench/toregistry.sh); default none: each big layer is sent as it is read")
	f.IntVar(&r.maxSpoolMiB, "max-spool", registrypush.DefaultMaxSpool>>20, w+"MiB of big layers spooled at most (the read waits beyond)")
}

// options are the push options the flags say, with token (a bearer token
// for the registry) when given.
func (r *registryFlags) options(token string) (registrypush.Options, error) {
	tg, err := registrypush.ParseTarget(r.target)
	if err != nil {
		return registrypush.Options{}, err
	}
	o := registrypush.Options{Target: tg, CAFile: r.caFile, PlainHTTP: r.plainHTTP, Jobs: r.jobs,
		ChunkSize: int64(r.chunkMiB) << 20, UserAgent: "crpe", SpoolDir: r.spoolDir, MaxSpool: int64(r.maxSpoolMiB) << 20}
	if r.maxSpoolMiB <= 0 {
		o.SpoolDir = ""
	}
	if r.flatten {
		o.Naming = registrypush.Flat
	}
	switch {
	case token != "" && r.username != "":
		return o, errors.New("give --token or --username/--password, not both")
	case token != "":
		o.Auth = &authn.Bearer{Token: token}
	case r.username != "":
		if r.password == "" {
			return o, errors.New("--username needs --password (or CRPE_PASSWORD)")
		}
		o.Auth = &authn.Basic{Username: r.username, Password: r.password}
	}
	return o, nil
}

// importToRegistry is crpe import --to-registry.
func importToRegistry(cmd *cobra.Command, set *parts.Set, file string, r *registryFlags, token, tokenFile string, asJSON bool, verify *sigverify.Policy) error {
	if token == "" && tokenFile != "" {
		toks, err := auth.LoadTokens(tokenFile)
		if err != nil {
			return err
		}
		token = toks.First()
	}
	o, err := r.options(token)
	if err != nil {
		return err
	}
	o.Verify = verify
	if cmd.Flags().Changed("chunk-size") {
		o.MaxPatch = o.ChunkSize // a proxy's limit on request bodies, say
	}
	f, err := set.Open()
	if err != nil {
		return err
	}
	defer f.Close()
	var res *registrypush.Result
	if osf, ok := f.(*os.File); ok && isRegular(osf) {
		// one file: its big layers are read from their places, several at once
		ra, done := readAtBar(cmd, asJSON, "push", set.Size, osf)
		res, err = registrypush.PushAt(cmd.Context(), ra, set.Size, o)
		done()
	} else {
		rd, done := readBar(cmd, asJSON, "push", set.Size, f)
		res, err = registrypush.Push(cmd.Context(), rd, o)
		done()
	}
	if err != nil {
		if pr, ok := f.(*parts.Reader); ok {
			if pe := pr.Fault(err); pe != nil {
				return fmt.Errorf("%s: %w", file, pe)
			}
		}
		var ee *archive.EntryError
		if errors.As(err, &ee) {
			return fmt.Errorf("%s: %w (nothing was tagged)", file, err)
		}
		return fmt.Errorf("%s: %w", file, err)
	}
	out := cmd.OutOrStdout()
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(out, "pushed %s to %s: %d images; %d blobs pushed (%s), %d skipped (%s), %d mounted, %d copied; %d manifests pushed, %d present; sent %s\n",
		strings.Join(res.PackageNames, ", "), res.Registry, len(res.Images), res.BlobsPushed, humanBytes(res.BytesPushed),
		res.BlobsSkipped, humanBytes(res.BytesSkipped), res.BlobsMounted, res.BlobsCopied, res.ManifestsPushed, res.ManifestsSkipped, humanBytes(res.BytesSent))
	for _, im := range res.Images {
		fmt.Fprintf(out, "%s → %s@%s\n", im.Ref, im.Repository, im.Digest)
	}
	return nil
}

// isRegular tells whether f is a regular file (not a pipe or a device).
func isRegular(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode().IsRegular()
}
