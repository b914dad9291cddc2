/** LINKTYPE_* values from the tcpdump.org link-layer header types registry, as stored in pcap and pcapng. */
export const LINKTYPE_NULL = 0;
export const LINKTYPE_ETHERNET = 1;
export const LINKTYPE_PPP = 9;
/** OpenBSD's and some other systems' DLT_RAW values, written into captures as-is. */
export const LINKTYPE_RAW_DLT12 = 12;
export const LINKTYPE_RAW_DLT14 = 14;
export const LINKTYPE_PPP_HDLC = 50;
export const LINKTYPE_PPP_ETHER = 51;
export const LINKTYPE_RAW = 101;
export const LINKTYPE_C_HDLC = 104;
export const LINKTYPE_LOOP = 108;
export const LINKTYPE_LINUX_SLL = 113;
export const LINKTYPE_PPI = 192;
export const LINKTYPE_IPV4 = 228;
export const LINKTYPE_IPV6 = 229;
export const LINKTYPE_LINUX_SLL2 = 276;
