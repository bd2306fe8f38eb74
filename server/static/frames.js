// Decoding of neurocast binary signal frames (layout in neurocast/server/frames.py, README).
"use strict";

const NCF_HEADER_SIZE = 56;

/**
 * Decode one binary WebSocket message.
 * @param {ArrayBuffer} buf the message (binaryType = "arraybuffer")
 * @returns {{windowEnd:number, tWindowEnd:number, sfreqHz:number, readyTime:number,
 *            simulated:boolean, valid:boolean, nChannels:number, nSamples:number,
 *            meta:object, data:Float32Array}} data is channels × samples, row-major
 */
function decodeSignalFrame(buf) {
  if (buf.byteLength < NCF_HEADER_SIZE) throw new Error("frame shorter than its header");
  const view = new DataView(buf);
  const magic = String.fromCharCode(
    view.getUint8(0), view.getUint8(1), view.getUint8(2), view.getUint8(3));
  if (magic !== "NCF1") throw new Error(`not a neurocast frame (magic ${magic})`);
  if (view.getUint8(4) !== 1 || view.getUint8(5) !== 1) throw new Error("unsupported frame version");
  const flags = view.getUint16(6, true);
  const nChannels = view.getUint32(8, true);
  const nSamples = view.getUint32(12, true);
  const metaLen = view.getUint32(48, true);
  const dataOffset = view.getUint32(52, true);
  if (buf.byteLength !== dataOffset + 4 * nChannels * nSamples) throw new Error("truncated frame");
  const meta = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, NCF_HEADER_SIZE, metaLen)));
  return {
    windowEnd: Number(view.getBigInt64(16, true)),
    tWindowEnd: view.getFloat64(24, true),
    sfreqHz: view.getFloat64(32, true),
    readyTime: view.getFloat64(40, true),
    simulated: (flags & 1) !== 0,
    valid: (flags & 2) !== 0,
    nChannels,
    nSamples,
    meta,
    data: new Float32Array(buf, dataOffset, nChannels * nSamples),
  };
}
