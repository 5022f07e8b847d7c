// The node's sandbox (pause) container: no dependencies, built by build.sh
// and written as an image by images/oci.sh, so no image is ever pulled.
module strake.local/e2e/cluster/tools/pause

go 1.26.0
