# Sourced by the role scripts: how the head node shares /home with the compute nodes.
# NFS where this kernel can serve it (a VM of an image with nfs-kernel-server); else SFTP, the
# compute nodes mounting it with sshfs over the members' own sshd (root, host-based): the local
# provider's kernel may not serve NFS. Head and compute nodes run one image on one kind of
# kernel, so both sides answer alike.
home_share() {
  modprobe -q nfsd 2>/dev/null || true
  if grep -qw nfsd /proc/filesystems && command -v exportfs >/dev/null; then
    echo nfs
  else
    echo sftp
  fi
}

# let_go_of_homes: unmount any /home (or home under it) mounted from another member: a head
# node serves its own. (A machine of a pool may have been a compute node of an earlier launch.)
let_go_of_homes() {
  findmnt --raw --noheadings --output TARGET,FSTYPE | while read -r target type; do
    case "$target $type" in
      "/home "nfs* | /home/*" "nfs* | "/home fuse.sshfs" | /home/*" fuse.sshfs") umount --lazy "$target" ;;
    esac
  done
}
