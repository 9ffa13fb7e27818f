# Partition layout of the image (sourced by image/build.sh). GPT on both machines (the Pi 4
# boot EEPROM reads GPT since 2020). Fixed GUIDs: the same commit gives the same image, and
# the kernel command line finds its root by PARTUUID.
#   1 boot   FAT32  kernel + initrd per slot (amd64: systemd-boot ESP; Pi: firmware, config.txt)
#   2 rootA  ext4   read-only root, slot A (written whole by an update)
#   3 rootB  ext4   read-only root, slot B (empty in a fresh image)
#   4 data   ext4   everything the PBX writes; grown to the disk's end at first boot
BOOT_MB=${BOOT_MB:-256}
ROOT_MB=${ROOT_MB:-2048}
DATA_MB=${DATA_MB:-256}
DISK_GUID=6f666963-6570-4278-8000-000000000000
BOOT_PARTUUID=6f666963-6570-4278-8000-000000000001
ROOTA_PARTUUID=6f666963-6570-4278-8000-00000000000a
ROOTB_PARTUUID=6f666963-6570-4278-8000-00000000000b
DATA_PARTUUID=6f666963-6570-4278-8000-00000000000d
ROOTFS_UUID=6f666963-6570-4278-8001-00000000000a
DATA_UUID=6f666963-6570-4278-8001-00000000000d
HASH_SEED=6f666963-6570-4278-8002-000000000000
VFAT_ID=0ff1ce00
ESP_TYPE=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
BASIC_DATA_TYPE=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7
LINUX_TYPE=0FC63DAF-8483-4772-8E79-3D69D8477DE4
