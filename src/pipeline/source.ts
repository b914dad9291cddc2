import type { Pipeline } from './pipeline.js';

/**
 * Where packets come from, and who carries out what the pipeline says about each (OpenGFW's
 * io.PacketIO is the model): the inline NFQUEUE path (QueueSource) and capture files
 * (CaptureSource) run the very same pipeline.
 */
export interface PacketSource {
  /**
   * Feeds packets to `pipeline` and carries out the PACKET_* action it returns for each. Resolves
   * once the source is serving (a queue is bound) or, for a finite source, once all is read.
   */
  run(pipeline: Pipeline): Promise<void>;
  /** Stops: a queue unbinds, and the packets still waiting in it are accepted. */
  close(): Promise<void>;
}
